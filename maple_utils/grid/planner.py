"""The planner: a grid file and the stage registry in, the jobs to run out. Loads no model, imports no torch.

One job per stage and unit: per prepared data set, per adapter, per evaluated model (adapters and base
models), once per grid. A job's fingerprint covers the config fields its stage reads, the hashes of the
registry entries it uses (task prompts, templates, dataset specs, language rows), the content revisions of
the local release files and model folders it reads, and the completion tokens of the jobs it needs, so an
edit reruns exactly the jobs it affects, and a retrained adapter reruns its evaluations.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from maple_utils import config, io, layout, registry, stages
from maple_utils.config import RunConfig
from maple_utils.paths import resolve


@dataclass
class Job:
    stage: stages.Stage
    key: str  # the data id, run id, or the grid's name
    folder: Path  # where its executed notebook, its rows and its completion marker go
    params: dict  # the notebook's parameters
    cfg: RunConfig | None = None
    needs: list[str] = field(default_factory=list)  # ids of the jobs that must complete first
    registry_hashes: dict = field(default_factory=dict)
    inputs: str = ""  # a digest of what the job reads beyond all this (the analysis: every row)
    contents: dict = field(default_factory=dict)  # {path: content revision} of the local files and folders it reads

    @property
    def id(self) -> str:
        return f"{self.stage.name}:{self.key}"

    @property
    def marker(self) -> Path:
        return layout.completion_marker(self.folder, self.stage.name)

    def fingerprint(self, upstream: dict[str, str]) -> str:
        used = self.cfg.hashed(self.stage.outcome_fields) if self.cfg is not None else {}
        what = {
            "config": used,
            "registry": self.registry_hashes,
            "inputs": self.inputs,
            "upstream": {n: upstream.get(n) for n in self.needs},
        }
        if self.contents:  # absent for embedded data and registered models: their fingerprints stay as they were
            what["contents"] = self.contents
        return registry.stable_hash(what, n=16)

    def completion(self) -> dict | None:
        """What the marker says: {fingerprint, token}; None when the job never completed."""
        if not self.marker.exists():
            return None
        try:
            return json.loads(self.marker.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def fingerprint_matches(self, upstream: dict[str, str]) -> bool:
        """Its completion marker holds this fingerprint (its outputs unchecked: damaged_output)."""
        done = self.completion()
        return bool(done) and done.get("fingerprint") == self.fingerprint(upstream)

    def is_done(self, upstream: dict[str, str]) -> bool:
        """Completed with this fingerprint, and its outputs are still what it left."""
        return self.fingerprint_matches(upstream) and not self.damaged_output()

    def output_files(self) -> list[Path]:
        """The files of its stage's declared outputs that are there now."""
        return sorted({p for pattern in self.stage.outputs for p in self.folder.glob(pattern) if p.is_file()})

    def damaged_output(self) -> str | None:
        """Why its outputs are not what its completion marker recorded: the first one missing, cut (another
        size) or changed (another hash, checked when its mtime moved); None when they are, or never recorded."""
        done = self.completion() or {}
        declared = self.stage.outputs  # a file a marker recorded that its stage no longer declares is not checked
        for name, (size, mtime_ns, sha) in sorted((done.get("outputs") or {}).items()):
            if not any(fnmatch.fnmatch(name, pattern) for pattern in declared):
                continue
            path = self.folder / name
            if not path.is_file():
                return f"{path} is missing"
            st = path.stat()
            if st.st_size != size:
                return f"{path} is {st.st_size:,} bytes, {size:,} when the job completed"
            if st.st_mtime_ns != mtime_ns and io.sha256_file(path)[:16] != sha:
                return f"{path} has changed since the job completed"
        return None

    def mark_done(self, upstream: dict[str, str]) -> str:
        """Write the marker with the size, mtime and hash of each output; its fresh token tells the jobs
        downstream that this output is new."""
        token = uuid.uuid4().hex
        outputs = {}
        for path in self.output_files():
            st = path.stat()
            outputs[str(path.relative_to(self.folder))] = [st.st_size, st.st_mtime_ns, io.sha256_file(path)[:16]]
        io.write_json(self.marker, {"fingerprint": self.fingerprint(upstream), "token": token, "outputs": outputs})
        return token


@dataclass
class Plan:
    grid: config.GridConfig
    grid_path: Path
    out: Path
    adapters: list[RunConfig]
    bases: list[RunConfig]
    jobs: list[Job]
    not_evaluated: dict[str, list[tuple[str, str]]]  # run id -> (task, language) pairs the tasks lack
    grid_files: list[Path] = field(default_factory=list)  # the files the grid was read from, included first
    overrides: dict = field(default_factory=dict)  # `-p key=value` on top of the grid file

    @property
    def effective(self) -> bool:
        """The grid is more than its file as written (an include, a `-p`): the folder keeps it resolved."""
        return len(self.grid_files) > 1 or bool(self.overrides)

    def jobs_of(self, stage_name: str) -> list[Job]:
        return [j for j in self.jobs if j.stage.name == stage_name]


def plan_grid(grid_path: str | Path, out: str | Path, overrides: dict | None = None) -> Plan:
    """Every job of a grid (with `-p` overrides on top), in stage order, with what each needs; a bad grid
    fails here, naming the field."""
    from maple_utils.eval.evaluate import task_languages

    overrides = overrides or {}
    grid = config.load_grid(grid_path, overrides)
    adapters, bases = config.expand(grid, str(grid_path))
    out = resolve(out).resolve()
    jobs: list[Job] = []
    for stage in stages.all_stages():
        seen = set()
        for cfg in stage.unit.configs(adapters, bases):
            key = stage.unit.key(cfg, grid.name)
            if key is None or key in seen:
                continue
            seen.add(key)
            folder = stage.unit.folder(out, key)
            params = dict(cfg.subset(stage.fields)) if cfg is not None else {}
            params.update({"out_dir": str(out), "run_dir": str(folder)})
            params = {p: params[p] for p in stage.parameters}
            needs = []
            for need in stage.needs:
                need_key = stages.get(need).unit.key(cfg, grid.name) if cfg is not None else None
                if need_key is not None:
                    needs.append(f"{need}:{need_key}")
            jobs.append(
                Job(
                    stage,
                    key,
                    folder,
                    params,
                    cfg,
                    needs,
                    stage.registry_hashes(cfg),
                    contents=stage.content_revisions(cfg),
                )
            )
    lacking = {config.run_id(c): task_languages(c)[1] for c in adapters + bases}
    not_evaluated = {k: v for k, v in lacking.items() if v}
    files = config.resolve_includes(grid_path)[1]
    return Plan(grid, Path(grid_path), out, adapters, bases, jobs, not_evaluated, files, overrides)


def select(plan: Plan, stages_wanted: list[str] | None, only: list[str] | None) -> set[str] | None:
    """The ids of the jobs `--stage` and `--only` ask for, with every job they need, transitively (those
    already complete are skipped when they come up); None when neither is given (the whole grid).

    `--only` takes comma-separated field=value pairs (`model=tiny-llama,rank=8`: the jobs whose config has
    those values) or a run id or data id; several `--only` are alternatives. A grid-wide job (06_analysis)
    is asked for only by `--stage`."""
    if not stages_wanted and not only:
        return None
    known = [s.name for s in stages.all_stages()]
    for name in stages_wanted or []:
        if name not in known:
            raise config.ConfigError(f"--stage {name!r} is not a stage; stages: {', '.join(known)}")
    matchers = [_selector(text) for text in only or []]
    chosen = [
        j
        for j in plan.jobs
        if (not stages_wanted or j.stage.name in stages_wanted)
        and (not matchers or (j.cfg is not None and any(m(j) for m in matchers)))
    ]
    if not chosen:
        asked = " ".join([*(f"--stage {s}" for s in stages_wanted or []), *(f"--only {o}" for o in only or [])])
        raise config.ConfigError(f"{asked}: no job of grid {plan.grid.name} matches")
    by_id = {j.id: j for j in plan.jobs}
    wanted: set[str] = set()
    todo = [j.id for j in chosen]
    while todo:
        job_id = todo.pop()
        if job_id not in wanted:
            wanted.add(job_id)
            todo += by_id[job_id].needs
    return wanted


def _selector(text: str):
    """One `--only` value as a test of a job: field=value pairs, or a run or data id."""
    from maple_utils.config.errors import suggest
    from maple_utils.config.grid import parse_value

    if "=" not in text:
        return lambda job: job.key == text.strip()
    pairs = {}
    for pair in (p for p in text.split(",") if p.strip()):
        key, _, value = (part.strip() for part in pair.partition("="))
        if key not in RunConfig.model_fields:
            fields = list(RunConfig.model_fields)
            raise config.ConfigError(f"--only {text}: {key!r} is not a config field{suggest(key, fields)}")
        pairs[key] = parse_value(value, f"--only {key}")

    def matches(job: Job) -> bool:
        return all(
            getattr(job.cfg, k) == v or (k == "model" and config.model_short(job.cfg.model) == v)
            for k, v in pairs.items()
        )

    return matches


def import_papermill():
    """papermill, imported without `rfc3987_syntax`: jsonschema (under nbformat) would import that URI-grammar
    package only to check "iri" string formats, which notebooks never use, and building its grammars costs
    about 3 s of CPU in every runner and `status` call."""
    import sys

    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: the import fails, jsonschema skips it
    import papermill

    return papermill


def check_notebooks(plan: Plan) -> None:
    """Each notebook declares exactly its stage's parameters, and each job passes exactly those."""
    papermill = import_papermill()

    from maple_utils.paths import notebooks_dir

    for stage in {j.stage.name: j.stage for j in plan.jobs}.values():
        path = notebooks_dir() / stage.notebook
        if not path.is_file():
            raise config.ConfigError(f"stage {stage.name}: no notebook {path}")
        declared = set(papermill.inspect_notebook(str(path)))
        if declared != set(stage.parameters):
            raise config.ConfigError(
                f"notebook {stage.notebook} declares {sorted(declared)} but stage {stage.name} reads "
                f"{sorted(stage.parameters)}: regenerate it with python scripts/write_notebook_parameters.py"
            )
