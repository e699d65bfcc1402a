"""Wall time per stage of a grid run, from its manifest.jsonl.

    python bench/stage_timings.py runs/smoke

Prints, per stage, how many notebooks ran and their total, mean and max wall time (kernel start and
imports included), plus the training throughput rows of 02_train. Use it on a fresh run: skipped stages
are not in the manifest's latest attempts.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd


def stage_timings(out: Path) -> pd.DataFrame:
    from maple_utils.grid import manifest
    from maple_utils.grid.manifest import Status

    latest: dict[str, dict] = {}
    for entry in manifest.read(out):
        if entry.status is Status.DONE:
            latest[entry.job] = entry
    by_stage = defaultdict(list)
    for entry in latest.values():
        by_stage[entry["stage"]].append(entry["wall_s"])
    return pd.DataFrame(
        [
            {
                "stage": s,
                "notebooks": len(w),
                "total_s": round(sum(w), 1),
                "mean_s": round(sum(w) / len(w), 1),
                "max_s": max(w),
            }
            for s, w in sorted(by_stage.items())
        ]
    )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/smoke")
    table = stage_timings(out)
    print(table.to_markdown(index=False))
    print(f"\nall notebooks: {table['total_s'].sum():.1f} s")
    from maple_utils import layout, stages, units

    frame = pd.read_parquet(out / layout.RESULTS_TABLE)
    training = [s.name for s in stages.of_unit(units.ADAPTER)]
    train = frame[frame["stage"].isin(training) & frame["metric"].isin(["tokens_per_s", "wall_s"])].astype(
        {"quant": int}
    )
    print("\n" + train.pivot_table(index=["model", "quant"], columns="metric", values="value").round(2).to_markdown())


if __name__ == "__main__":
    main()
