"""The numbers behind the paper-style figures: ours against every published method of a domain.

Pure data (pandas tables), kept apart from the drawing in ``figures.py`` so each figure's values can be
checked against hand-computed ones:

    curves = domain_curves(runs, reference, suite, "dmc_proprio")    # aggregate score over env steps
    bars = final_bars(final, reference, suite, "dmc_proprio")        # final scores at the same budget
    summary = cross_domain(pd.concat([bars, ...]), suite)            # one panel per domain

Scores are in the domain's normalisation (suites.yaml ``normalise``; baselines.yaml for Atari, DMLab
and ProcGen) and aggregated over tasks with ``stats.aggregate`` (``METRIC``) and a 95% stratified
bootstrap interval. Which published methods appear and their names come from suites.yaml ``methods``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dreamer_tf.harness.results import Published, Run, bin_curve, published_at
from dreamer_tf.harness.stats import NORMALISATIONS, aggregate, bootstrap_ci, normalise
from dreamer_tf.harness.suite import Suite

METRIC = "mean"  # the paper's curves show the mean over tasks of the normalised score
CURVE_COLUMNS = ["domain", "source", "method", "label", "origin", "step", "tasks", "value", "lo", "hi"]
BAR_COLUMNS = ["domain", "source", "method", "label", "origin", "tasks", "runs", "step", "value", "lo", "hi"]
SUMMARY_COLUMNS = ["domain", "role", "source", "method", "label", "origin", "value", "lo", "hi", "step"]


def domain_methods(suite: Suite, domain: str) -> dict[str, str]:
    """Published method -> display name for ``domain``: the agents' own published methods first, then
    the others that suites.yaml ``methods.domains`` lists for it."""
    entry = suite.domains.get(domain) or {}
    if not entry.get("published"):
        return {}
    methods = [spec.get("published") for spec in suite.agents.values() if spec.get("published")]
    listed = ((suite.data.get("methods") or {}).get("domains") or {}).get(domain) or []
    return {method: suite.method_label(method) for method in dict.fromkeys([*methods, *listed])}


def other_methods(suite: Suite) -> dict[str, dict[str, str]]:
    """Per domain, the published methods that are not an agent's own (MuZero, D4PG, ...)."""
    own = {spec.get("published") for spec in suite.agents.values()}
    return {
        domain: {m: label for m, label in domain_methods(suite, domain).items() if m not in own}
        for domain in suite.domains
    }


def normalised(
    kind: str,
    values: np.ndarray,
    task: str,
    entry: Mapping[str, Any],
    reference: Published,
    missing: set[str],
) -> np.ndarray:
    """``values`` in the normalisation ``kind`` (raw kinds unchanged); empty, and ``task`` added to
    ``missing``, when baselines.yaml has no random/human scores for it."""
    if not len(values) or kind not in NORMALISATIONS:
        return values
    section, cap = NORMALISATIONS[kind]
    baseline = reference.baseline(section, task, entry)
    if baseline is None:
        missing.add(task)
        return np.array([])
    return normalise(values, *baseline, cap=cap)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return values[np.isfinite(values)]


def _has_baseline(kind: str, task: str, entry: Mapping[str, Any], reference: Published) -> bool:
    return kind not in NORMALISATIONS or reference.baseline(NORMALISATIONS[kind][0], task, entry) is not None


def _last_step(run: Run, episodes: pd.DataFrame) -> float:
    return max(float(run.step), float(episodes["step"].max()) if len(episodes) else 0.0)


def _estimate(per_task: Sequence[np.ndarray], metric: str, reps: int) -> tuple[float, float, float]:
    low, high = bootstrap_ci(per_task, metric, reps=reps)
    return aggregate(per_task, metric), low, high


def domain_curves(
    runs: Sequence[Run],
    reference: Published,
    suite: Suite,
    domain: str,
    metric: str = METRIC,
    bins: int = 30,
    reps: int = 1000,
    x_range: str = "ours",
) -> pd.DataFrame:
    """Per source (our agents, every published method of the domain), the normalised score aggregated
    over the domain's tasks at ``bins`` env steps, with a 95% stratified-bootstrap interval.

    The tasks are those with our (unablated) runs. The x axis ``(0, end]`` is split into ``bins`` equal
    bins; ``end`` is our furthest env step, or the published curves' end (``x_range="published"``). A
    point is the bin's end; a run's value there is the mean of its episodes in the bin (ours) or the
    curve's points in the bin, else the curve interpolated at the bin's end (published). A source has a
    point only where every task has at least one value, so all points average the same tasks.
    """
    entry = suite.domains.get(domain) or {}
    kind = entry.get("normalise", "raw")
    if kind in ("bsuite", "crafter"):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        if run.domain == domain and run.logdir is not None and not run.ablation and run.agent in suite.agents:
            by_task.setdefault(run.task, []).append(run)
    missing: set[str] = set()
    tasks = [t for t in sorted(by_task) if _has_baseline(kind, t, entry, reference)]
    if not tasks:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    episodes = {id(run): run.episodes() for task in tasks for run in by_task[task]}
    end = max(_last_step(r, episodes[id(r)]) for task in tasks for r in by_task[task])
    methods = domain_methods(suite, domain) if reference.available else {}
    published = {m: {task: reference.runs(entry, task, m) for task in tasks} for m in methods}
    if x_range == "published":
        ends = [xs.max() for curves in published.values() for runs_ in curves.values() for xs, _ in runs_]
        end = max([end, *ends])
    if end <= 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    edges = np.linspace(0.0, float(end), bins + 1)

    # Per source: per task, a (seeds, bins) array of normalised values (NaN where a seed has none).
    sources: list[tuple[str, str, str, dict[str, np.ndarray]]] = []
    for agent, spec in suite.agents.items():
        values = {}
        for task in tasks:
            rows = [
                bin_curve(frame["step"].to_numpy(float), frame["score"].to_numpy(float), edges, False)
                for frame in (episodes[id(r)] for r in by_task[task] if r.agent == agent)
            ]
            if rows:
                values[task] = normalised(kind, np.array(rows), task, entry, reference, missing)
        sources.append((agent, str(spec.get("label", agent)), "ours", values))
    for method, label in methods.items():
        values = {}
        for task, curves in published[method].items():
            if curves:
                rows = np.array([bin_curve(xs, ys, edges, True) for xs, ys in curves])
                values[task] = normalised(kind, rows, task, entry, reference, missing)
        sources.append((method, label, "published", values))

    out = []
    for method, label, origin, values in sources:
        if set(values) != set(tasks):
            continue  # a source without every task would average a different set of tasks
        for index, step in enumerate(edges[1:]):
            per_task = [_finite(values[task][:, index]) for task in tasks]
            if not all(len(v) for v in per_task):
                continue
            value, low, high = _estimate(per_task, metric, reps)
            out.append(
                {
                    "domain": domain,
                    "source": f"{label} ({origin})",
                    "method": method,
                    "label": label,
                    "origin": origin,
                    "step": float(step),
                    "tasks": len(tasks),
                    "value": value,
                    "lo": low,
                    "hi": high,
                }  # fmt: skip
            )
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


def final_bars(
    final: pd.DataFrame,
    reference: Published,
    suite: Suite,
    domain: str,
    metric: str = METRIC,
    reps: int = 1000,
) -> pd.DataFrame:
    """Per source, the final normalised score aggregated over the domain's tasks, with its 95% interval.

    Ours: each run's final score (``final_scores``). Published: each seed's curve read at the env step
    our runs of that task reached (the same window), so every bar is at the same budget; ``step`` is
    the furthest of those steps. Tasks are those where our unablated runs finished an episode.
    """
    entry = suite.domains.get(domain) or {}
    kind = entry.get("normalise", "raw")
    empty = pd.DataFrame(columns=BAR_COLUMNS)
    if kind in ("bsuite", "crafter") or final.empty:
        return empty
    mine = final[(final["domain"] == domain) & (final["ablation"] == "") & (final["episodes"] > 0)]
    if mine.empty:
        return empty
    missing: set[str] = set()
    steps = {task: float(group["step"].max()) for task, group in mine.groupby("task")}
    sources: list[tuple[str, str, str, list[np.ndarray]]] = []
    for agent, spec in suite.agents.items():
        per_task = []
        for task, group in mine[mine["agent"] == agent].groupby("task"):
            values = normalised(kind, _finite(group["score"].to_numpy()), task, entry, reference, missing)
            if len(values):
                per_task.append(values)
        sources.append((agent, str(spec.get("label", agent)), "ours", per_task))
    for method, label in (domain_methods(suite, domain) if reference.available else {}).items():
        per_task = []
        for task, step in steps.items():
            at = published_at(reference, entry, task, method, step)
            values = normalised(kind, at, task, entry, reference, missing)
            if len(values):
                per_task.append(values)
        sources.append((method, label, "published", per_task))
    out = []
    for method, label, origin, per_task in sources:
        if not per_task:
            continue
        value, low, high = _estimate(per_task, metric, reps)
        out.append(
            {
                "domain": domain,
                "source": f"{label} ({origin})",
                "method": method,
                "label": label,
                "origin": origin,
                "tasks": len(per_task),
                "runs": int(sum(len(v) for v in per_task)),
                "step": max(steps.values()),
                "value": value,
                "lo": low,
                "hi": high,
            }  # fmt: skip
        )
    return pd.DataFrame(out, columns=BAR_COLUMNS)


def absent_methods(bars: pd.DataFrame, suite: Suite, domain: str) -> list[str]:
    """The labels of the domain's published methods (``domain_methods``) that have no bar in ``bars``:
    no file in the reference folder, or no point by the env steps our runs reached."""
    drawn = set(bars.loc[bars["origin"] == "published", "method"]) if len(bars) else set()
    return [label for method, label in domain_methods(suite, domain).items() if method not in drawn]


def cross_domain(bars: pd.DataFrame, suite: Suite) -> pd.DataFrame:
    """Per domain of ``bars``: our agents, their published counterparts and the best other published
    method (highest final score at our budget), in the order DreamerV3 (ours), DreamerV3 (published),
    best other, PPO (ours), PPO (published)."""
    rows = []
    own = {spec.get("published"): agent for agent, spec in suite.agents.items() if spec.get("published")}
    for domain, data in bars.groupby("domain", sort=False):
        ours = data[data["origin"] == "ours"].set_index("method")
        published = data[data["origin"] == "published"].set_index("method")
        others = published[~published.index.isin(list(own))]
        best = others["value"].idxmax() if len(others) else None
        picked: list[tuple[str, pd.Series]] = []
        for index, (agent, spec) in enumerate(suite.agents.items()):
            label = spec.get("label", agent)
            if agent in ours.index:
                picked.append((f"{label} (ours)", ours.loc[agent]))
            method = spec.get("published")
            role = f"{suite.method_label(method)} (published)" if method else ""
            if method in published.index and role not in dict(picked):  # shared by two agents: once
                picked.append((role, published.loc[method]))
            if index == 0 and best is not None:
                picked.append(("best other published", others.loc[best]))
        for role, item in picked:
            rows.append({"domain": domain, "role": role, **{c: item[c] for c in ("source", "label", "origin",
                         "value", "lo", "hi", "step")}, "method": item.name})  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
