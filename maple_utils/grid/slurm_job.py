"""What one task of a SLURM job array runs: one job's notebook, as the local executor would, leaving its
manifest entry in the job's attempt folder for the runner.

    python -m maple_utils.grid.slurm_job TASKS.json INDEX

TASKS.json lists [job spec, entry path] per array task; INDEX is $SLURM_ARRAY_TASK_ID.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from maple_utils import io
from maple_utils.grid.local import execute
from maple_utils.grid.manifest import Status


def main(tasks: str, index: str) -> int:
    spec, result = io.read_json(tasks)[int(index)]
    job, out, attempt, timeout = pickle.loads(Path(spec).read_bytes())
    entry = execute(job, Path(out), attempt, timeout)
    io.write_json(result, entry.to_json())  # atomic: the runner reads a whole entry or none
    return 0 if entry.status is Status.DONE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
