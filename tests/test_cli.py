"""The `maple` command: --version, `-p key=value` overrides, `--stage` / `--only` selectors, and the judge's
preflight (run through the installed console script, or main() where only planning is asked)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import maple_utils
from conftest import REPO, run_cli
from maple_utils import config
from maple_utils.config import ConfigError
from maple_utils.grid import cli
from maple_utils.grid.planner import plan_grid, select

MAPLE = Path(sys.executable).parent / "maple"  # the console script pip installed beside this interpreter


def maple(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MAPLE), *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env or dict(os.environ)
    )


def test_the_console_script_prints_the_version_and_its_own_name():
    assert MAPLE.is_file(), f"{MAPLE}: the project is not installed with its console script (make setup)"
    proc = maple("--version")
    assert proc.returncode == 0 and proc.stdout == f"MAPLE {maple_utils.__version__}\n"
    assert maple("run", "--help").stdout.startswith("usage: maple run")


def _dry(*args: str, capsys) -> list[str]:
    assert cli.main(["run", "params/smoke.yaml", "--out", "/tmp/never-written", "--dry-run", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_one_stage_of_one_model_at_one_rank_is_those_jobs_and_the_inputs_they_lack(capsys):
    lines = _dry("-p", "rank=8", "--stage", "02_train", "--only", "model=tiny-llama", capsys=capsys)
    jobs = [
        line.strip() for line in lines[: lines.index("06_analysis: 0 job(s), one per grid")] if line.startswith("  ")
    ]
    assert jobs == ["multialpaca-a0c9099d", "tiny-llama_multialpaca_r8_q16-e79dcf6c"]
    assert (
        "02_train: 1 job(s), one per adapter" in lines
        and "03_evaluate: 0 job(s), one per evaluated model (adapter or base)" in lines
    )
    # the effective grid: rank fixed, its axis gone, the exclude rules read at rank 8
    assert "# the effective grid of params/smoke.yaml, with -p rank=8" in lines
    assert "exclude:" in lines and "- quant: 4" in lines and "- quant: 8" in lines


def test_selectors_by_run_id_and_by_several_fields_and_their_errors(tmp_path):
    plan = plan_grid(REPO / "params" / "smoke.yaml", tmp_path)
    wanted = select(plan, ["03_evaluate"], ["tiny-mistral_base_q16-34ca3e7f"])
    assert wanted == {"03_evaluate:tiny-mistral_base_q16-34ca3e7f"}  # a base model needs nothing
    wanted = select(plan, None, ["model=tiny-mistral,quant=4"])
    assert sorted(wanted) == [
        "01_data:multialpaca-a0c9099d", "02_train:tiny-mistral_multialpaca_r4_q4-9ad4285b",
        "03_evaluate:tiny-mistral_multialpaca_r4_q4-9ad4285b", "04_alpaca_eval:tiny-mistral_multialpaca_r4_q4-9ad4285b",
        "05_judge:tiny-mistral_multialpaca_r4_q4-9ad4285b",
    ]  # fmt: skip
    assert select(plan, ["06_analysis"], None) == {"06_analysis:smoke"}
    assert select(plan, None, None) is None
    for stages, only, needle in (
        (["03_eval"], None, "--stage '03_eval' is not a stage; stages: 01_data"),
        (None, ["modle=tiny-llama"], "'modle' is not a config field"),
        (None, ["rank=64"], "--only rank=64: no job of grid smoke matches"),
    ):
        with pytest.raises(ConfigError, match=needle):
            select(plan, stages, only)


@pytest.mark.parametrize(
    "pairs, needle",
    [
        (["rnak=8"], "-p rnak: not a config field; did you mean 'rank'?"),
        (["rank"], "-p 'rank': give key=value"),
        (["axes.rnak=[8]"], "-p axes.rnak: 'rnak' is not a config field; did you mean 'rank'?"),
        (["rank=[8"], "-p rank: '[8' is not a YAML value"),
    ],
)
def test_bad_overrides_are_refused_naming_the_flag(pairs, needle):
    with pytest.raises(ConfigError) as err:
        config.parse_overrides(pairs)
    assert needle in str(err.value)


def test_overrides_are_validated_like_the_file_and_name_the_flag(tmp_path):
    proc = run_cli("run", "params/smoke.yaml", "--out", str(tmp_path / "o"), "-p", "rank=eight", "--dry-run")
    assert proc.returncode == 2
    assert "field '-p rank': Input should be a valid integer" in proc.stderr
    overrides = config.parse_overrides(["axes.rank=[16, 32]", "learning_rate=2e-4", "evaluate_base_models=false"])
    assert overrides == {"axes.rank": [16, 32], "learning_rate": 0.0002, "evaluate_base_models": False}
    with pytest.raises(
        ConfigError, match=r"exclude\[0\]\.rank is 8, which is not a value of axes\.rank \(\[16, 32\]\)"
    ):
        plan_grid(REPO / "params" / "smoke.yaml", tmp_path, overrides)  # the smoke grid's rules name rank 8
    overrides["axes.rank"] = [8, 16]
    plan = plan_grid(REPO / "params" / "smoke.yaml", tmp_path, overrides)
    assert {c.learning_rate for c in plan.adapters} == {0.0002} and plan.bases == []
    assert sorted({(c.rank, c.quant) for c in plan.adapters}) == [(8, 16), (16, 4), (16, 8), (16, 16)]


def test_an_api_judge_without_its_key_stops_in_preflight_before_any_kernel(tmp_path):
    grid = tmp_path / "api.yaml"
    grid.write_text(f"include: {REPO / 'params' / 'smoke.yaml'}\nfixed:\n  judge: api\n  judge_model: gpt-4o-mini\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    out = tmp_path / "out"
    proc = maple("run", str(grid), "--out", str(out), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "preflight: judge: api (gpt-4o-mini) needs OPENAI_API_KEY and OPENAI_BASE_URL in the environment" in proc.stderr
    )
    assert not out.exists()  # nothing written, so no kernel started
