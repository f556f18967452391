"""Score normalisations and aggregate statistics of the paper's comparisons.

Pure functions over numpy arrays. Scores of one method in one domain are a list with one array per
task holding one score per run (seed); tasks may have different numbers of runs.

    per_task = [np.array([0.9, 1.1]), np.array([0.2, 0.4, 0.3])]
    iqm(np.concatenate(per_task))                   # interquartile mean of all runs
    aggregate(per_task, "median")                   # median over tasks of the per-task means
    bootstrap_ci(per_task, "iqm", reps=2000)        # 95% stratified bootstrap interval

The aggregates and the interval follow Agarwal et al. (2021), "Deep RL at the Edge of the
Statistical Precipice" (the rliable package, which does not install next to pandas 3 here): the
mean and median are over the per-task mean scores, the IQM is the mean of the middle 50% of all
runs' scores, and the stratified bootstrap resamples runs with replacement within each task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# suites.yaml `normalise` -> (section of baselines.yaml, cap at 1). Scores become
# (score - low) / (high - low): low/high are random/human for Atari and DMLab, min/max for ProcGen.
NORMALISATIONS: dict[str, tuple[str, bool]] = {
    "human": ("atari57_gamer", False),
    "human_capped": ("dmlab30", True),
    "procgen": ("procgen_hard", False),
}
LABELS = {
    "human": "human-normalised score",
    "human_capped": "capped human-normalised score",
    "procgen": "ProcGen-normalised score (min-max, hard)",
    "raw": "raw score",
    "bsuite": "bsuite score",
    "crafter": "Crafter score (%)",
}
METRICS = ("mean", "median", "iqm")


def normalise(scores: np.ndarray | float, low: float, high: float, cap: bool = False) -> np.ndarray:
    """``(scores - low) / (high - low)``, capped at 1 when ``cap`` (DMLab-30's convention)."""
    assert high != low, f"baseline range is empty: low {low}, high {high}"
    values = (np.asarray(scores, np.float64) - low) / (high - low)
    return np.minimum(values, 1.0) if cap else values


def iqm(values: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean: the mean after dropping the lowest and highest 25% of the values.

    Drops ``floor(0.25 n)`` values at each end, as ``scipy.stats.trim_mean(values, 0.25)`` does.
    """
    values = np.sort(np.asarray(values, np.float64).ravel())
    assert values.size, "iqm of no values"
    cut = int(0.25 * values.size)
    return float(values[cut : values.size - cut].mean())


def aggregate(per_task: Sequence[np.ndarray], metric: str) -> float:
    """``mean`` / ``median`` over tasks of the per-task mean, or ``iqm`` over all runs."""
    tasks = [np.asarray(runs, np.float64).ravel() for runs in per_task]
    assert tasks and all(runs.size for runs in tasks), "every task needs at least one run"
    if metric == "iqm":
        return iqm(np.concatenate(tasks))
    means = np.array([runs.mean() for runs in tasks])
    if metric == "mean":
        return float(means.mean())
    if metric == "median":
        return float(np.median(means))
    raise ValueError(f"Unknown metric '{metric}': use one of {METRICS}.")


def bootstrap_ci(
    per_task: Sequence[np.ndarray],
    metric: str | Callable[[Sequence[np.ndarray]], float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``metric`` under the stratified bootstrap.

    Each replicate draws, for every task separately, as many runs as the task has, with
    replacement, and recomputes the metric. With one run per task the interval is the point.
    """
    statistic = metric if callable(metric) else (lambda tasks: aggregate(tasks, metric))
    tasks = [np.asarray(runs, np.float64).ravel() for runs in per_task]
    rng = np.random.default_rng(seed)
    # One index matrix per task: (reps, runs of the task).
    draws = [rng.integers(0, runs.size, size=(reps, runs.size)) for runs in tasks]
    values = np.array([statistic([runs[index[r]] for runs, index in zip(tasks, draws)]) for r in range(reps)])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def summarise(per_task: Sequence[np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """Every metric with its 95% interval: ``{"mean": m, "mean_lo": lo, "mean_hi": hi, ...}``."""
    out: dict[str, float] = {"tasks": float(len(per_task)), "runs": float(sum(len(r) for r in per_task))}
    for metric in METRICS:
        out[metric] = aggregate(per_task, metric)
        out[f"{metric}_lo"], out[f"{metric}_hi"] = bootstrap_ci(per_task, metric, reps=reps, seed=seed)
    return out
