"""The paper-style report of a sweep: tables (CSV, Markdown, LaTeX), figures and ``index.html``.

    paths = build_report("runs/", "reports/short", Suite.load(), Published.from_env())

Writes into the output folder:

    index.html                    everything below on one page, stamped with commit, configs, versions
    report.json                   counts, notes and the stamp, for scripts
    tables/runs.*                 every run: state, steps reached, error (failed and unavailable included)
    tables/per_task.*             ours against published at the same env steps, per task
    tables/aggregate.*            per domain, the paper's normalisation: mean, median, IQM, 95% CIs
    tables/bsuite.*               bsuite's capability scores (when bsuite CSV logs exist)
    tables/ablations.*            the ablations (when ablation runs exist)
    tables/domain_curves.csv, final_bars.csv, cross_domain.csv   the data of the three figures below
    figures/curves_<domain>.png   learning curves per task, ours next to the published ones (and PDF)
    figures/domain_curve_<domain>.png   per domain, the score over tasks against env steps: ours and
                                  every published method (comparisons.py; PNG at 300 dpi and PDF)
    figures/final_bars_<domain>.png     per domain, final scores at our budget, same methods
    figures/cross_domain.png      one panel per domain: DreamerV3, the best other method, PPO
    figures/aggregate.png, figures/bsuite.png, figures/ablations.png
"""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dreamer_tf.harness import comparisons, figures
from dreamer_tf.harness.results import (
    Published,
    Run,
    binned_curves,
    bsuite_scores,
    final_scores,
    find_runs,
    published_at,
    published_end,
    runs_table,
)
from dreamer_tf.harness.stats import LABELS, METRICS, NORMALISATIONS, summarise
from dreamer_tf.harness.suite import SUMMARY_FILE, Suite, read_json

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "dreamer-tf", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "numpy", "pandas", "scipy",
    "matplotlib", "seaborn", "gymnasium", "ale-py", "dm-control", "mujoco", "bsuite", "crafter",
    "memory-maze", "procgen-mirror", "ray",
)  # fmt: skip


def build_report(
    runs_dir: str | Path,
    out: str | Path,
    suite: Suite,
    reference: Published,
    bins: int = 30,
    reps: int = 2000,
    x_range: str = "ours",
    command: str = "",
    all_methods: bool = False,
    at: int = 0,
) -> dict[str, Any]:
    """Read the runs under ``runs_dir``, write the report into ``out``; returns ``report.json``'s content.

    ``all_methods`` adds the published methods other than the agents' own (suites.yaml ``methods``)
    to the per-task curve grids; the per-domain figures always show them. ``at`` > 0 reports every run
    as it stood at that env step (the published curves are then read there too)."""
    runs_dir, out = Path(runs_dir), Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    runs = find_runs(runs_dir, suite)
    if at > 0:
        runs = [run.at(at) for run in runs]
    suite = suite.shown(run.agent for run in runs)  # optional agents (ppo_acme) only where they ran
    notes: list[str] = []
    if at > 0:
        notes.append(f"Every run as it stood at {at:,} env steps (--at): later episodes are left out.")
    if not reference.available:
        notes.append(
            f"Published curves are absent ({reference.reason}): only our runs are shown. "
            "Get them with `python scripts/download_scores.py --out DIR` and set DREAMER_REFERENCE_SCORES=DIR."
        )
    elif not reference.baselines:
        notes.append(
            "No baselines.yaml (random and human scores) next to the published scores: Atari, DMLab and "
            "ProcGen cannot be normalised."
        )
    agents = {name: spec.get("published", "") for name, spec in suite.agents.items()}
    labels = {name: spec.get("label", name) for name, spec in suite.agents.items()}
    final = final_scores(runs)
    extra = comparisons.other_methods(suite) if all_methods else None
    curves = binned_curves(runs, reference, suite, agents, bins=bins, x_range=x_range, extra=extra)
    per_task = per_task_table(runs, final, reference, suite)
    bsuite_experiments, bsuite_tags, bsuite_note = bsuite_scores(runs)
    aggregates, aggregate_notes = aggregate_table(final, bsuite_experiments, reference, suite, reps)
    notes += aggregate_notes
    for budget in sorted({run.budget for run in runs if run.budget}):
        if (suite.budgets.get(budget) or {}).get("report_note"):  # e.g. smoke: a plumbing check
            notes.insert(0, f"Budget '{budget}': {suite.budgets[budget]['report_note']}")
    ablations, ablation_tasks, ablation_curves = ablation_tables(runs, final, reps)

    tables = {
        "runs": runs_table(runs),
        "per_task": per_task,
        "aggregate": aggregates,
    }
    if not bsuite_tags.empty:
        tables["bsuite"] = bsuite_table(bsuite_tags, bsuite_experiments)
    if not ablations.empty:
        tables["ablations"] = ablations
        tables["ablation_tasks"] = ablation_tasks
    display = {
        "runs": display_runs(tables["runs"]),
        "per_task": display_per_task(per_task, labels, published_labels(suite)),
        "aggregate": display_aggregate(aggregates),
    }
    if "bsuite" in tables:
        display["bsuite"] = tables["bsuite"].round(3)
    if "ablations" in tables:
        display["ablations"] = display_ablations(ablations)
        display["ablation_tasks"] = ablation_tasks.round(3)
    for name, frame in tables.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
        shown = display.get(name, frame)
        (out / "tables" / f"{name}.md").write_text(to_markdown(shown))
        (out / "tables" / f"{name}.tex").write_text(to_latex(shown, caption=TABLE_TITLES.get(name, name)))

    names = (suite.data.get("methods") or {}).get("names") or {}
    methods = list(dict.fromkeys([labels[name] for name in suite.agents] + [str(v) for v in names.values()]))
    paper, paper_tables = paper_figures(
        runs, final, reference, suite, out / "figures", methods, bins, reps, x_range
    )
    for name, frame in paper_tables.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    figure_paths = {
        **paper,
        "curves": figures.curve_figures(curves, suite.domains, out / "figures", methods),
        "aggregate": figures.aggregate_figure(aggregates, out / "figures" / "aggregate.png"),
        "bsuite": figures.bsuite_figure(bsuite_tags, out / "figures" / "bsuite.png"),
        "ablations": figures.ablation_figure(ablations, ablation_curves, out / "figures" / "ablations.png"),
    }
    stamp = provenance(runs_dir, suite, command)
    counts = tables["runs"]["state"].value_counts().to_dict() if len(runs) else {}
    report = {
        "runs_dir": str(runs_dir.resolve()),
        "counts": {str(k): int(v) for k, v in counts.items()},
        "published": reference.reason,
        "published_available": reference.available,
        "notes": notes,
        "bsuite": bsuite_note,
        "tables": sorted(str(p.relative_to(out)) for p in (out / "tables").iterdir()),
        "figures": [
            str(q.relative_to(out))
            for paths in figure_paths.values()
            for p in paths
            for q in (p, p.with_suffix(".pdf"))
            if q.exists()
        ],
        "stamp": {k: v for k, v in stamp.items() if k not in ("suite_yaml", "configs")},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "index.html").write_text(
        render_html(report, display, figure_paths, stamp, out, has_bsuite="bsuite" in tables)
    )
    return report


TABLE_TITLES = {
    "runs": "Every run of the sweep",
    "per_task": "Per task: ours against the published curves at the same env steps",
    "aggregate": "Per domain, in the paper's normalisation: mean, median and IQM with 95% stratified-bootstrap CIs",
    "bsuite": "BSuite capability scores (bsuite's analysis)",
    "ablations": "Ablations: task-normalised final scores",
    "ablation_tasks": "Ablations: final score per task (mean over seeds)",
}


# ------------------------------------------------------------------ analysis


def _values(frame: pd.DataFrame, column: str = "score") -> np.ndarray:
    values = frame[column].to_numpy(np.float64) if column in frame else np.array([])
    return values[np.isfinite(values)]


def per_task_table(
    runs: Sequence[Run], final: pd.DataFrame, reference: Published, suite: Suite
) -> pd.DataFrame:
    """One row per (domain, task) of the sweep's unablated runs: our mean, std and seeds per agent,
    and the published agents' at the same env steps and at the end of their curves."""
    rows = []
    main = final[final["ablation"] == ""] if len(final) else final
    tasks = sorted({(run.domain, run.task) for run in runs if not run.ablation})
    for domain, task in tasks:
        entry = suite.domains.get(domain, {})
        mine = main[(main["domain"] == domain) & (main["task"] == task)] if len(main) else main
        steps = int(mine["step"].max()) if len(mine) and mine["episodes"].sum() else 0
        task_runs = [r for r in runs if r.domain == domain and r.task == task and not r.ablation]
        if not steps:
            steps = max([r.step for r in task_runs] + [0])
        row: dict[str, Any] = {"domain": domain, "task": task, "env_steps": steps}
        for agent, spec in suite.agents.items():
            values = _values(mine[mine["agent"] == agent]) if len(mine) else np.array([])
            row.update(_describe(f"{agent}", values))
            ended = mine[(mine["agent"] == agent) & (mine["episodes"] > 0)] if len(mine) else mine
            scores = ended["score"].to_numpy(np.float64) if len(ended) else np.array([])
            row[f"{agent}_note"] = missing_reason([r for r in task_runs if r.agent == agent], scores)
            method = spec.get("published", "")
            published = published_at(reference, entry, task, method, steps) if steps else np.array([])
            row.update(_describe(f"{agent}_published", published))
            full, end = published_end(reference, entry, task, method)
            row.update(_describe(f"{agent}_published_full", full))
            row[f"{agent}_published_full_steps"] = end
        row["runs"] = _state_summary(task_runs, suite)
        rows.append(row)
    return pd.DataFrame(rows)


def shorten(text: str, limit: int = 160) -> str:
    """``text`` cut to about ``limit`` characters at a space, never inside a word; a URL the limit
    falls in is kept whole, as is a first word longer than ``limit``. ``…`` marks a cut (the runs
    table has the full text)."""
    if len(text) <= limit:
        return text
    start = text.rfind(" ", 0, limit + 1) + 1  # the word the limit falls in starts here
    end = text.find(" ", limit)
    end = len(text) if end < 0 else end
    cut = end if start == 0 or "://" in text[start:end] else start - 1
    return text if cut >= len(text) else text[:cut].rstrip() + " …"


def missing_reason(agent_runs: Sequence[Run], scores: np.ndarray) -> str:
    """Why an agent has no (or fewer) final scores on a task: the failed runs' error from status.json,
    a non-finite score, or the runs' states; empty when every run has a finite score."""
    scores = np.asarray(scores, np.float64)
    nonfinite = int((~np.isfinite(scores)).sum())
    if not agent_runs:
        return "not run"
    failed = [r for r in agent_runs if r.state == "failed"]
    if failed and len(scores) - nonfinite < len(agent_runs):
        return f"failed: {shorten(failed[0].error or 'no error recorded in status.json')}"
    if nonfinite:
        return "non-finite score" if nonfinite == len(scores) else f"{nonfinite} of {len(scores)} non-finite"
    if len(scores) < len(agent_runs):
        states = sorted({r.state for r in agent_runs})
        unavailable = [r.error for r in agent_runs if r.state == "unavailable" and r.error]
        if unavailable:
            return f"unavailable: {shorten(unavailable[0])}"
        return f"no finished episodes ({', '.join(states)})"
    return ""


def _describe(prefix: str, values: np.ndarray) -> dict[str, float]:
    return {
        f"{prefix}_mean": float(values.mean()) if len(values) else np.nan,
        f"{prefix}_std": float(values.std()) if len(values) else np.nan,
        f"{prefix}_seeds": int(len(values)),
    }


def _state_summary(task_runs: Sequence[Run], suite: Suite) -> str:
    parts = []
    for agent in dict.fromkeys(r.agent for r in task_runs):
        states: dict[str, int] = {}
        for run in task_runs:
            if run.agent == agent:
                states[run.state] = states.get(run.state, 0) + 1
        label = suite.agents.get(agent, {}).get("label", agent)
        text = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        errors = sorted({r.error for r in task_runs if r.agent == agent and r.error})
        if errors:
            text += f" ({shorten(errors[0])})"
        parts.append(f"{label}: {text}")
    return "; ".join(parts)


def paper_figures(
    runs: Sequence[Run],
    final: pd.DataFrame,
    reference: Published,
    suite: Suite,
    folder: Path,
    methods: Sequence[str],
    bins: int,
    reps: int,
    x_range: str,
) -> tuple[dict[str, list[Path]], dict[str, pd.DataFrame]]:
    """Per domain with our runs, the aggregate learning curve and the final-score bars of ours against
    every published method, and the cross-domain summary: the PNG paths (a PDF beside each) by figure
    kind, and the figures' data as tables (``tables/domain_curves.csv`` ...)."""
    curve_reps = min(reps, 1000)  # one interval per point: 30 points per source
    paths: dict[str, list[Path]] = {"domain_curves": [], "final_bars": [], "cross_domain": []}
    all_curves, all_bars, ylabels = [], [], {}
    for domain, entry in suite.domains.items():
        kind = entry.get("normalise", "raw")
        ylabel = LABELS.get(kind, kind)
        info = entry.get("published") or {}
        points = comparisons.domain_curves(runs, reference, suite, domain, bins=bins, reps=curve_reps,
                                           x_range=x_range)  # fmt: skip
        bars = comparisons.final_bars(final, reference, suite, domain, reps=reps)
        xlabel = figures.step_label(float(info.get("frames_per_step", 1)))
        stem = folder / f"domain_curve_{domain}"
        paths["domain_curves"] += figures.domain_curve_figure(points, domain, ylabel, stem, methods, xlabel)[
            :1
        ]
        stem = folder / f"final_bars_{domain}"
        absent = comparisons.absent_methods(bars, suite, domain) if reference.available else []
        paths["final_bars"] += figures.final_bar_figure(bars, domain, ylabel, stem, methods, absent)[:1]
        if not bars.empty:
            all_bars.append(bars)
            ylabels[domain] = ylabel
        if not points.empty:
            all_curves.append(points)
    bars = (
        pd.concat(all_bars, ignore_index=True) if all_bars else pd.DataFrame(columns=comparisons.BAR_COLUMNS)
    )
    summary = comparisons.cross_domain(bars, suite)
    paths["cross_domain"] = figures.cross_domain_figure(summary, ylabels, folder / "cross_domain", methods)[
        :1
    ]
    curves = (
        pd.concat(all_curves, ignore_index=True)
        if all_curves
        else pd.DataFrame(columns=comparisons.CURVE_COLUMNS)
    )
    return paths, {"domain_curves": curves, "final_bars": bars, "cross_domain": summary}


def aggregate_table(
    final: pd.DataFrame, bsuite_experiments: pd.DataFrame, reference: Published, suite: Suite, reps: int
) -> tuple[pd.DataFrame, list[str]]:
    """Per domain and source (our agents; the published agents at our env steps), the paper's
    normalised scores aggregated over tasks: mean, median, IQM with 95% stratified-bootstrap CIs."""
    rows, notes = [], []
    main = final[final["ablation"] == ""] if len(final) else final
    for domain, entry in suite.domains.items():
        kind = entry.get("normalise", "raw")
        label = LABELS.get(kind, kind)
        sources: dict[str, list[np.ndarray]] = {}
        if kind == "bsuite":
            if bsuite_experiments.empty:
                continue
            for agent, frame in bsuite_experiments.groupby("agent"):
                if agent not in suite.agents:
                    continue  # an ablation: in the ablation tables, not the comparison of agents
                name = f"{suite.agents.get(agent, {}).get('label', agent)} (ours)"
                sources[name] = [_values(group) for _, group in frame.groupby("bsuite_env")]
            label += " per experiment"
        else:
            mine = main[(main["domain"] == domain) & (main["episodes"] > 0)] if len(main) else main
            if mine.empty:
                continue
            column = "crafter_score" if kind == "crafter" and "crafter_score" in mine else "score"
            missing: set[str] = set()
            for agent, spec in suite.agents.items():
                label_agent = spec.get("label", agent)
                ours, published = [], []
                for task, group in mine.groupby("task"):
                    steps = float(group["step"].max())
                    theirs = group[group["agent"] == agent]
                    values = _normalised(kind, _values(theirs, column), task, entry, reference, missing)
                    if len(values):
                        ours.append(values)
                    if kind != "crafter" and spec.get("published"):
                        at = published_at(reference, entry, task, spec["published"], steps)
                        values = _normalised(kind, at, task, entry, reference, missing)
                        if len(values):
                            published.append(values)
                if ours:
                    sources[f"{label_agent} (ours)"] = ours
                if published:  # one entry per published method, however many agents share it
                    sources[f"{suite.method_label(spec['published'])} (published, same steps)"] = published
            if missing:
                section = NORMALISATIONS[kind][0]
                where = (
                    "in baselines.yaml"
                    if reference.baselines
                    else "(no baselines.yaml next to the published scores)"
                )
                notes.append(
                    f"{domain}: no {section} random/human scores for {', '.join(sorted(missing))} {where}; "
                    "left out of the aggregates."
                )
        for source, per_task in sources.items():
            stats = summarise(per_task, reps=reps)
            rows.append({"domain": domain, "normalisation": label, "source": source, **stats})
    columns = ["domain", "normalisation", "source", "tasks", "runs"]
    columns += [f"{m}{suffix}" for m in METRICS for suffix in ("", "_lo", "_hi")]
    return pd.DataFrame(rows, columns=columns), notes


_normalised = comparisons.normalised


def ablation_tables(
    runs: Sequence[Run], final: pd.DataFrame, reps: int, bins: int = 20
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ablations: per variant, the final score normalised per task to [0, 1] over all variants'
    runs of that task (0 the worst run, 1 the best), aggregated over tasks with a 95% interval;
    the raw per-task means; and task-normalised learning curves over the fraction of each run."""
    empty = pd.DataFrame()
    if final.empty or not (final["ablation"] != "").any():
        return empty, empty, empty
    tasks = sorted(set(final.loc[final["ablation"] != "", "task"]))
    data = final[final["task"].isin(tasks) & (final["agent"] == "dreamerv3") & (final["episodes"] > 0)].copy()
    data["variant"] = np.where(data["ablation"] == "", "dreamerv3", "dreamerv3-" + data["ablation"])
    per_variant: dict[str, list[np.ndarray]] = {}
    for _, group in data.groupby("task"):
        low, high = group["score"].min(), group["score"].max()
        for variant, runs_ in group.groupby("variant"):
            scores = runs_["score"].to_numpy(np.float64)
            norm = (scores - low) / (high - low) if high > low else np.full(len(scores), 0.5)
            per_variant.setdefault(variant, []).append(norm)
    rows = [{"variant": v, **summarise(per_task, reps=reps)} for v, per_task in sorted(per_variant.items())]
    summary = pd.DataFrame(rows)
    per_task = data.pivot_table(index="task", columns="variant", values="score", aggfunc="mean").reset_index()
    # Curves over the fraction of each run, normalised per task over all variants' binned values.
    frames = []
    edges = np.linspace(0, 1, bins + 1)
    from dreamer_tf.harness.results import bin_curve

    for run in runs:
        if run.logdir is None or run.task not in tasks or run.agent != "dreamerv3":
            continue
        episodes = run.episodes()
        end = max(run.step, int(episodes["step"].max()) if len(episodes) else 0)
        if not len(episodes) or not end:
            continue
        values = bin_curve(
            episodes["step"].to_numpy(float) / end, episodes["score"].to_numpy(float), edges, False
        )
        frames.append(
            pd.DataFrame({"task": run.task, "variant": run.variant, "progress": edges[1:], "score": values})
        )
    curves = pd.concat(frames, ignore_index=True) if frames else empty
    if not curves.empty:
        curves = curves.dropna(subset=["score"])
        low = curves.groupby("task")["score"].transform("min")
        span = curves.groupby("task")["score"].transform("max") - low
        curves["normalised"] = np.where(span > 0, (curves["score"] - low) / span.where(span > 0, 1.0), 0.5)
    return summary, per_task, curves


def bsuite_table(tags: pd.DataFrame, experiments: pd.DataFrame) -> pd.DataFrame:
    """Capability score per tag and agent (mean over seeds), and the mean over experiments."""
    table = tags.pivot_table(index="tag", columns="agent", values="score", aggfunc="mean").reset_index()
    overall = experiments.groupby("agent")["score"].mean()
    table = pd.concat(
        [table, pd.DataFrame([{"tag": "mean over experiments", **overall.to_dict()}])], ignore_index=True
    )
    return table


# ------------------------------------------------------------------ display tables


def fmt(value: float) -> str:
    """A score for a table cell: three significant digits, thousands without decimals."""
    if value is None or not np.isfinite(value):
        return "–"
    if abs(value) >= 1000 or (abs(value) >= 10 and float(value).is_integer()):
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def mean_std(mean: float, std: float, seeds: int) -> str:
    seeds = int(seeds)
    if not seeds:
        return "–"
    return f"{fmt(mean)} ± {fmt(std)} ({seeds})" if seeds > 1 else f"{fmt(mean)} (1)"


def published_labels(suite: Suite) -> dict[str, str]:
    """Agent -> display name of its published method, for the first agent of each published method
    (a second PPO configuration shares PPO's published curves: one column, not two)."""
    out, seen = {}, set()
    for agent, spec in suite.agents.items():
        method = spec.get("published")
        if method and method not in seen:
            seen.add(method)
            out[agent] = suite.method_label(method)
    return out


def display_per_task(
    table: pd.DataFrame, labels: Mapping[str, str], published: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The per-task table for reading: ours per agent (``labels``), then the published scores of
    ``published`` (agent -> display name; default: every agent, under its own label)."""
    published = labels if published is None else published
    if table.empty:
        return pd.DataFrame(columns=["Domain", "Task"])
    out = pd.DataFrame(
        {"Domain": table["domain"], "Task": table["task"], "Env steps": table["env_steps"].map(fmt)}
    )
    for agent, label in labels.items():
        notes = table[f"{agent}_note"] if f"{agent}_note" in table else [""] * len(table)
        out[f"{label} (ours)"] = [
            mean_std(*r) + (f" ({note})" if isinstance(note, str) and note else "")
            for r, note in zip(table[[f"{agent}_mean", f"{agent}_std", f"{agent}_seeds"]].to_numpy(), notes)
        ]
    for agent, label in published.items():
        prefix = f"{agent}_published"
        out[f"{label} (published, same steps)"] = [
            mean_std(*r) for r in table[[f"{prefix}_mean", f"{prefix}_std", f"{prefix}_seeds"]].to_numpy()
        ]
    for agent, label in published.items():
        prefix = f"{agent}_published_full"
        out[f"{label} (published, full budget)"] = [
            f"{mean_std(m, s, int(n))} at {fmt(e)}" if n else "–"
            for m, s, n, e in table[
                [f"{prefix}_mean", f"{prefix}_std", f"{prefix}_seeds", f"{prefix}_steps"]
            ].to_numpy()
        ]
    out["Runs"] = table["runs"]
    return out


def display_aggregate(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame(columns=["Domain", "Source"])
    out = pd.DataFrame(
        {
            "Domain": table["domain"],
            "Normalisation": table["normalisation"],
            "Source": table["source"],
            "Tasks": table["tasks"].astype(int),
            "Runs": table["runs"].astype(int),
        }
    )
    for metric, title in (("mean", "Mean"), ("median", "Median"), ("iqm", "IQM")):
        out[f"{title} [95% CI]"] = [
            f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"
            for v, lo, hi in table[[metric, f"{metric}_lo", f"{metric}_hi"]].to_numpy()
        ]
    return out


def display_ablations(table: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {"Variant": table["variant"], "Tasks": table["tasks"].astype(int), "Runs": table["runs"].astype(int)}
    )
    out["Task-normalised score [95% CI]"] = [
        f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]" for v, lo, hi in table[["mean", "mean_lo", "mean_hi"]].to_numpy()
    ]
    return out


def display_runs(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    out = table[["run", "state", "step", "target_steps", "backend", "error"]].copy()
    out.columns = ["Run", "State", "Step", "Target steps", "Backend", "Error"]
    return out


# ------------------------------------------------------------------ writers


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    return "" if value is None else str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--", "÷": r"$\div$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    columns = "l" * len(frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{columns}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\")
    lines.append(r"\midrule")
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_cell(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html_table(frame: pd.DataFrame, limit: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for index, row in enumerate(frame.itertuples(index=False)):
        if limit is not None and index >= limit:
            rows.append(
                f'<tr><td colspan="{len(frame.columns)}">… {len(frame) - limit} more rows in the CSV</td></tr>'
            )
            break
        cells = []
        for column, value in zip(frame.columns, row):
            text = html.escape(_cell(value))
            css = f' class="state-{text}"' if column in ("State", "state") else ""
            cells.append(f"<td{css}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ------------------------------------------------------------------ provenance and HTML


def provenance(runs_dir: Path, suite: Suite, command: str) -> dict[str, Any]:
    """Git commit, date, commands, package versions, suites.yaml and the runs' resolved configs."""
    commit = _git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    summary = read_json(runs_dir / SUMMARY_FILE) or {}
    configs: dict[str, str] = {}
    for path in sorted(runs_dir.rglob("config.yaml")):
        run = read_json(path.parent / "run.json") or {}
        key = f"{run.get('domain', path.parent.parent.parent.name)} / {run.get('agent', '?')}"
        key += f"-{run['ablation']}" if run.get("ablation") else ""
        configs.setdefault(key, path.read_text())
    return {
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "report_command": command,
        "sweep_command": summary.get("command", "(no suite.json: not made by run_suite.py)"),
        "sweep_executor": summary.get("executor", ""),
        "python": f"{platform.python_version()} on {platform.platform()}",
        "packages": versions,
        "suite_file": str(suite.path) if suite.path else "",
        "suite_yaml": suite.path.read_text() if suite.path and suite.path.exists() else "",
        "configs": configs,
    }


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
.state-failed { color: #b00020; font-weight: bold; } .state-unavailable { color: #8a6d00; }
.state-done { color: #1b5e20; } .note { background: #fff6d6; border: 1px solid #e0c96b; padding: 0.6em; }
.stamp { color: #555; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
#image-check:empty { display: none; } #image-check { color: #b00020; font-weight: bold; }
"""

# Tells a reader (and the headless-browser test) whether every figure loaded.
IMAGE_CHECK = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  var el = document.getElementById("image-check");
  el.setAttribute("data-total", images.length);
  el.setAttribute("data-broken", broken.length);
  el.setAttribute("data-status", "checked");
  if (broken.length) {
    el.textContent = broken.length + " of " + images.length + " figures did not load: " +
      broken.map(function (img) { return img.getAttribute("src"); }).join(", ");
  }
});
</script>
"""


def render_html(
    report: Mapping[str, Any],
    display: Mapping[str, pd.DataFrame],
    figure_paths: Mapping[str, list[Path]],
    stamp: Mapping[str, Any],
    out: Path,
    has_bsuite: bool,
) -> str:
    """The report page: relative links to the figures and tables, so the folder can be moved."""

    def img(path: Path, alt: str) -> str:
        rel = path.relative_to(out).as_posix()
        return (
            f'<p><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{html.escape(alt)}"></a></p>'
        )

    def links(name: str) -> str:
        return " ".join(f'<a href="tables/{name}.{ext}">{ext}</a>' for ext in ("csv", "md", "tex"))

    counts = report["counts"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>dreamer_tf benchmark report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>DreamerV3 (dreamer_tf) benchmark report</h1>",
        f'<p class="stamp">Commit <code>{html.escape(stamp["commit"])}</code> · {html.escape(stamp["date"])} · '
        f"runs <code>{html.escape(report['runs_dir'])}</code></p>",
        '<p id="image-check" data-status="pending"></p>',
    ]
    parts.append(
        "<p>"
        + " · ".join(f"<b>{count}</b> {html.escape(state)}" for state, count in sorted(counts.items()))
        + f" runs. {html.escape(report['published'])}.</p>"
    )
    for note in report["notes"]:
        parts.append(f'<p class="note">{html.escape(note)}</p>')

    parts.append("<h2>Aggregate scores per domain</h2>")
    parts.append(
        "<p>Each domain in the paper's normalisation (Atari: human-normalised, DMLab: capped "
        "human-normalised, ProcGen: min-max normalised, DMC and Memory Maze: raw, BSuite: bsuite score, "
        "Crafter: Crafter score). Mean and median are over the per-task means, IQM over all runs; "
        "intervals are 95% stratified-bootstrap confidence intervals. A run's score is its mean "
        "training-episode score over the last 10% of its env steps; the published curves are read at "
        f"the same env steps. {links('aggregate')}</p>"
    )
    parts += [img(p, "aggregate scores") for p in figure_paths["aggregate"]]
    parts.append(
        to_html_table(display["aggregate"])
        if len(display["aggregate"])
        else "<p>No finished episodes yet.</p>"
    )

    per_domain = figure_paths.get("domain_curves", []) + figure_paths.get("final_bars", [])
    per_domain.sort(key=lambda p: (p.stem.removeprefix("domain_curve_").removeprefix("final_bars_"), p.stem))
    paper = figure_paths.get("cross_domain", []) + per_domain
    if paper:
        parts.append("<h2>Ours against every published method</h2>")
        parts.append(
            "<p>Per domain, in its normalisation: the score averaged over the tasks we ran, against env "
            "steps (band: 95% stratified-bootstrap interval), and the final scores, with every published "
            "method read at the env steps our runs reached. The summary shows, per domain, DreamerV3 "
            "(ours and published), the best other published method and PPO. Which methods appear, and "
            "their names, is set in suites.yaml <code>methods</code>. Each figure is also a PDF (vector); "
            'their data is in <a href="tables/domain_curves.csv">domain_curves.csv</a>, '
            '<a href="tables/final_bars.csv">final_bars.csv</a> and '
            '<a href="tables/cross_domain.csv">cross_domain.csv</a>.</p>'
        )
        for path in paper:
            pdf = path.with_suffix(".pdf").relative_to(out).as_posix()
            parts.append(img(path, path.stem) + f'<p><a href="{html.escape(pdf)}">{html.escape(pdf)}</a></p>')

    if has_bsuite:
        parts.append("<h2>BSuite capabilities</h2>")
        parts.append(f"<p>Scores by bsuite's own analysis of the runs' CSV logs. {links('bsuite')}</p>")
        parts += [img(p, "bsuite capabilities") for p in figure_paths["bsuite"]]
        parts.append(to_html_table(display["bsuite"]))

    parts.append("<h2>Per task</h2>")
    parts.append(
        "<p>Mean ± standard deviation over seeds (number of seeds). “Same steps”: the published curves at "
        "the env steps our runs reached; “full budget”: at the end of the published curves. Atari and "
        f"DMLab curves are published in frames and shown in env steps (frames ÷ 4). {links('per_task')}</p>"
    )
    parts.append(to_html_table(display["per_task"]))
    if figure_paths["curves"]:
        parts.append("<h3>Learning curves</h3>")
        parts.append(
            "<p>Solid: our runs; dashed: published. Line: mean over seeds; band: ± one standard deviation.</p>"
        )
        parts += [img(p, p.stem) for p in figure_paths["curves"]]

    if "ablations" in display:
        parts.append("<h2>Ablations</h2>")
        parts.append(
            "<p>DreamerV3 with one robustness technique switched off (the <code>abl_*</code> presets), "
            "against the full DreamerV3 on the same tasks. Scores are normalised per task over all variants' "
            f"runs (0: the worst run, 1: the best). {links('ablations')}</p>"
        )
        parts += [img(p, "ablations") for p in figure_paths["ablations"]]
        parts.append(to_html_table(display["ablations"]))
        parts.append(to_html_table(display["ablation_tasks"]))

    parts.append("<h2>Runs</h2>")
    parts.append(
        f"<p>Every run of the sweep, failed and unavailable ones with their reason. {links('runs')}</p>"
    )
    parts.append(to_html_table(display["runs"], limit=2000))

    parts.append("<h2>Provenance</h2>")
    rows = [
        ("Commit", stamp["commit"]),
        ("Report made", stamp["date"]),
        ("Report command", stamp["report_command"]),
        ("Sweep command", stamp["sweep_command"]),
        ("Sweep executor", stamp["sweep_executor"]),
        ("Python", stamp["python"]),
        ("Suite file", stamp["suite_file"]),
        ("Published data", report["published"]),
    ]
    parts.append(to_html_table(pd.DataFrame(rows, columns=["", ""])))
    versions = pd.DataFrame(sorted(stamp["packages"].items()), columns=["Package", "Version"])
    parts.append("<h3>Package versions</h3>" + to_html_table(versions))
    if stamp["suite_yaml"]:
        parts.append("<details><summary>dreamer_tf/harness/suites.yaml</summary>")
        parts.append(f"<pre>{html.escape(stamp['suite_yaml'])}</pre></details>")
    for key, text in stamp["configs"].items():
        parts.append(f"<details><summary>Resolved config: {html.escape(key)}</summary>")
        parts.append(f"<pre>{html.escape(text)}</pre></details>")
    parts.append(IMAGE_CHECK)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
