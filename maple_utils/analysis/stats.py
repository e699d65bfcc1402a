"""Statistics the study did not report, from the per-item predictions of stage 03.

- A task's score is the mean over its languages of each language's mean item score (as the tables show
  it). Its confidence interval is a percentile bootstrap that resamples items within each language.
- Two configurations are compared on the items both scored (matched by language and item id) with a
  paired sign-flip permutation test of the mean difference: exact over every sign pattern up to
  EXACT_MAX items, Monte Carlo beyond. Holm's step-down correction adjusts a family of such p-values.

Every function takes a seed; the same inputs and seed give the same numbers.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from maple_utils import io, layout

EXACT_MAX = 16  # items up to which the permutation test enumerates every sign pattern
RESAMPLES = 2000  # bootstrap resamples and Monte Carlo permutations
ALPHA = 0.05


def item_scores(
    run_dir: str | Path, task: str, metric: str, languages: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """{language: {item id: score}} from a run's predictions/<task>-<language>.jsonl files."""
    out: dict[str, dict[str, float]] = {}
    for code, path in layout.prediction_files(run_dir, task).items():
        if languages is not None and code not in languages:
            continue
        items = io.read_jsonl(path)
        out[code] = {str(it["id"]): float(it["scores"][metric]) for it in items if metric in it.get("scores", {})}
    return out


def task_score(by_language: dict[str, dict[str, float]]) -> float:
    """Mean over languages of each language's mean item score."""
    means = [np.mean(list(items.values())) for items in by_language.values() if items]
    return float(np.mean(means)) if means else float("nan")


def bootstrap_ci(
    by_language: dict[str, dict[str, float]], level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of `task_score`, resampling items with replacement within each
    language: languages in sorted order, each drawing the indices of all its resamples from one generator at
    once (a resamples x items array of int32), so a report's intervals take numpy's time, not Python's."""
    rng = np.random.default_rng(seed)
    languages = [np.array(list(by_language[c].values())) for c in sorted(by_language) if by_language[c]]
    if not languages:
        return float("nan"), float("nan")
    means = [s[rng.integers(0, len(s), (resamples, len(s)), dtype=np.int32)].mean(axis=1) for s in languages]
    draws = np.mean(means, axis=0)
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def paired_differences(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> np.ndarray:
    """Per-item differences a - b over the items both scored (same language, same item id)."""
    diffs = [a[c][i] - b[c][i] for c in sorted(set(a) & set(b)) for i in sorted(set(a[c]) & set(b[c]))]
    return np.array(diffs, dtype=float)


def paired_permutation_p(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean difference under random sign flips of the paired differences:
    the share of sign patterns whose |mean| is at least the observed one (exact for up to EXACT_MAX items;
    Monte Carlo otherwise, counting the observed pattern so that p > 0)."""
    n = len(diffs)
    if n == 0:
        return float("nan")
    observed = abs(diffs.mean())
    tolerance = 1e-12  # ties with the observed statistic count as extreme
    if n <= EXACT_MAX:
        extreme = sum(
            abs(np.dot(signs, diffs) / n) >= observed - tolerance for signs in itertools.product((1, -1), repeat=n)
        )
        return extreme / 2**n
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    extreme = int((np.abs(signs @ diffs / n) >= observed - tolerance).sum())
    return (extreme + 1) / (resamples + 1)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
