"""bench/gpu_check.py --tiny: the GPU validation kit's own code, run on the CPU with tiny models."""

import json
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_runs_every_part_on_tiny_models(tmp_path, tiny_built):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    training = [r for r in rows if r["part"] == "training"]
    assert {(r["model"], r["quant"], r["rank"]) for r in training} == {
        (m, q, r) for m in ("llama2-7b", "mistral-7b") for q in (4, 8, 16) for r in (8, 64, 128)
    }
    assert all(r["trained_tokens_per_s"] > 0 and r["tokens"] == 2 * 2 * 64 for r in training)
    # LoRA on the attention layers of the tiny shape: r x (in + out) per layer, so the count grows with r
    by_rank = {r["rank"]: r["trainable_params"] for r in training if r["model"] == "llama2-7b" and r["quant"] == 16}
    assert by_rank[64] == 8 * by_rank[8] and by_rank[128] == 16 * by_rank[8]
    assert all(r["mfu"] is None and r["peak_gpu_gb"] is None for r in training)  # no GPU here: nothing invented
    scoring = {(r["model"], r["mode"]): r for r in rows if r["part"] == "scoring"}
    assert set(scoring) == {(m, mode) for m in ("llama2-7b", "mistral-7b") for mode in ("shared prefix", "no sharing")}
    assert {r["batch"] for r in rows if r["part"] == "generation"} == {1, 16, 64}
    assert all(r["decode_tokens_per_s"] > 0 for r in rows if r["part"] == "generation")
    assert all(r["switch_s"] >= 0 for r in rows if r["part"] == "adapters")
    assert (
        report["tiny"]
        and report["device"].startswith("CPU")
        and "| training | mistral-7b | 4-bit, r 128 |" in proc.stdout
    )
