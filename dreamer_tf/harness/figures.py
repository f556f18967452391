"""The report's figures, drawn with seaborn on matplotlib's Agg backend (no display needed).

    paths = curve_figures(curves, suite, out / "figures")      # one grid of tasks per domain
    aggregate_figure(aggregates, out / "figures" / "aggregate.png")
    ablation_figure(ablations, curves, out / "figures" / "ablations.png")
    domain_curve_figure(points, "dmc_proprio", label, out / "figures" / "domain_curve_dmc_proprio")
    final_bar_figure(bars, "dmc_proprio", label, out / "figures" / "final_bars_dmc_proprio")
    cross_domain_figure(summary, labels, out / "figures" / "cross_domain")

The last three draw the tables of ``comparisons.py`` and write a PNG at print resolution and a
vector PDF next to it. Every function returns the paths it wrote (none when there is nothing to draw).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files on machines without a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

TASKS_PER_FIGURE = 20
DPI = 110  # the web page's PNGs; the PDFs are vector
PRINT_DPI = 300
LEGEND_COLUMNS = 4
LEGEND_ROW = 0.22  # inches per row of the legend above a curve grid
ORIGIN_DASHES = {"ours": "", "published": (4, 2)}


def _style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)


def step_label(frames_per_step: float) -> str:
    """The x-axis label; says how published frames became env steps where they differ."""
    if frames_per_step and frames_per_step != 1:
        return f"env steps (published frames ÷ {frames_per_step:g})"
    return "env steps"


def curve_figures(
    curves: pd.DataFrame,
    domains: Mapping[str, Mapping[str, Any]],
    folder: Path,
    methods: Sequence[str],
) -> list[Path]:
    """Per domain, learning curves of every task with our runs: mean over seeds and ±1 std band.

    Our runs are solid lines, the published curves dashed, in the agent's colour. ``methods`` fixes
    the colour order (``["DreamerV3", "PPO"]``).
    """
    _style()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain, frame in curves.groupby("domain", sort=True):
        info = (domains.get(domain) or {}).get("published") or {}
        tasks = sorted(frame["task"].unique())
        palette = method_colors([*methods, *frame["method"]], present=frame["method"])
        legend_rows = math.ceil(frame["source"].nunique() / LEGEND_COLUMNS)
        for page, start in enumerate(range(0, len(tasks), TASKS_PER_FIGURE)):
            chunk = tasks[start : start + TASKS_PER_FIGURE]
            cols = min(4, len(chunk))
            rows = math.ceil(len(chunk) / cols)
            width = max(4.2 * cols, 9.0)  # room for the legend and title above a single task
            top = 0.95 + LEGEND_ROW * (legend_rows - 1)  # inches above the panels: title and legend
            fig, axes = plt.subplots(rows, cols, figsize=(width, 3.2 * rows + top - 0.05), squeeze=False)
            for ax, task in zip(axes.flat, chunk):
                data = frame[frame["task"] == task]
                _draw_task(ax, data, task, palette, step_label(float(info.get("frames_per_step", 1))))
            for ax in list(axes.flat)[len(chunk) :]:
                ax.set_visible(False)
            shown = frame[frame["score"].notna()]
            present = set(zip(shown["method"], shown["origin"]))
            handles = [
                plt.Line2D(
                    [],
                    [],
                    color=palette.get(m, "gray"),
                    dashes=ORIGIN_DASHES[o] or (None, None),
                    label=f"{m} ({o})",
                )
                for m in methods
                for o in ("ours", "published")
                if (m, o) in present
            ]
            # Lay out the panels first, then make room above them for the title and the legend.
            height = fig.get_figheight()
            fig.tight_layout()
            fig.subplots_adjust(top=1 - top / height)
            suffix = f"_{page + 1}" if len(tasks) > TASKS_PER_FIGURE else ""
            fig.suptitle(
                f"{domain}: training episode score (mean ± std over seeds)", y=1 - 0.08 / height, va="top"
            )
            fig.legend(handles=handles, loc="upper center", ncol=max(min(len(handles), LEGEND_COLUMNS), 1),
                       frameon=False,
                       bbox_to_anchor=(0.5, 1 - 0.36 / height))  # fmt: skip
            path = folder / f"curves_{domain}{suffix}.png"
            fig.savefig(path, dpi=DPI)
            fig.savefig(path.with_suffix(".pdf"))
            plt.close(fig)
            paths.append(path)
    return paths


def _draw_task(ax: Any, data: pd.DataFrame, task: str, palette: Mapping[str, Any], xlabel: str) -> None:
    end = float(data["step"].max()) if len(data) else 1.0
    data = data[data["score"].notna()]
    for (method, origin), group in data.groupby(["method", "origin"], sort=True):
        stats = group.groupby("step")["score"].agg(["mean", "std", "count"]).reset_index()
        color = palette.get(method, "gray")
        line = ax.plot(
            stats["step"], stats["mean"], color=color, lw=1.6, marker="." if len(stats) < 4 else None
        )[0]
        if ORIGIN_DASHES.get(origin):
            line.set_dashes(ORIGIN_DASHES[origin])
        spread = stats["std"].fillna(0.0)
        ax.fill_between(
            stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=color, alpha=0.15, lw=0
        )
    if data.empty or not (data["origin"] == "ours").any():
        # In a band added above the curves, so the note never covers a published curve.
        low, high = ax.get_ylim() if not data.empty else (0.0, 1.0)
        ax.set_ylim(low, high + 0.2 * (high - low))
        ax.text(0.5, 0.97, "no finished episodes of ours", transform=ax.transAxes, ha="center", va="top",
                fontsize=7, color="gray")  # fmt: skip
    ax.set_xlim(0, end)
    ax.set_title(task, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))


def aggregate_figure(aggregates: pd.DataFrame, path: Path) -> list[Path]:
    """Per domain (rows) and metric (columns: mean, median, IQM), each source's estimate and its
    95% stratified-bootstrap interval, in the domain's normalisation."""
    if aggregates.empty:
        return []
    _style()
    domains = list(dict.fromkeys(aggregates["domain"]))
    metrics = [("mean", "Mean"), ("median", "Median"), ("iqm", "IQM")]
    heights = [0.9 + 0.3 * int((aggregates["domain"] == d).sum()) for d in domains]
    fig, axes = plt.subplots(
        len(domains),
        3,
        figsize=(12, 0.4 + sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    # One colour per agent; the published curves' intervals are paler, with a hollow marker.
    methods = list(dict.fromkeys(source.rsplit(" (", 1)[0] for source in aggregates["source"]))
    colors = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1))))
    for row, domain in enumerate(domains):
        data = aggregates[aggregates["domain"] == domain].reset_index(drop=True)
        for col, (metric, title) in enumerate(metrics):
            ax = axes[row, col]
            for index, item in data.iterrows():
                estimate, low, high = item[metric], item[f"{metric}_lo"], item[f"{metric}_hi"]
                color = colors[item["source"].rsplit(" (", 1)[0]]
                ours = item["source"].endswith("(ours)")
                alpha = 0.5 if ours else 0.2
                ax.plot([low, high], [index, index], color=color, lw=6, alpha=alpha, solid_capstyle="butt")
                ax.plot([estimate], [index], marker="|" if ours else "o", color=color, ms=12 if ours else 6,
                        mew=2, mfc=color if ours else "white")  # fmt: skip
            ax.set_yticks(range(len(data)))
            ax.set_yticklabels(data["source"] if col == 0 else [""] * len(data), fontsize=8)
            ax.set_ylim(-0.7, len(data) - 0.3)
            ax.set_title(f"{domain}: {title}" if col == 0 else title, fontsize=9)
            ax.set_xlabel(data["normalisation"].iloc[0], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return [path]


def bsuite_figure(capabilities: pd.DataFrame, path: Path) -> list[Path]:
    """bsuite capability scores (its tags) per agent, mean over seeds."""
    if capabilities.empty:
        return []
    _style()
    order = sorted(capabilities["tag"].unique())
    fig, ax = plt.subplots(figsize=(1.2 * len(order) + 3, 3.6))
    sns.barplot(data=capabilities, x="tag", y="score", hue="agent", order=order, errorbar=None, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_ylabel("bsuite score")
    ax.set_title("BSuite capability scores")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return [path]


def ablation_figure(summary: pd.DataFrame, curves: pd.DataFrame, path: Path) -> list[Path]:
    """Left: each variant's task-normalised final score (mean over tasks, 95% interval).
    Right: the variants' learning curves, averaged over tasks after the same normalisation."""
    if summary.empty:
        return []
    _style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.8 + 0.35 * len(summary) + 1.5))
    data = summary.sort_values("mean", ascending=True).reset_index(drop=True)
    for index, item in data.iterrows():
        color = "tab:blue" if item["variant"] == "dreamerv3" else "tab:gray"
        left.plot([item["mean_lo"], item["mean_hi"]], [index, index], color=color, lw=6, alpha=0.45)
        left.plot([item["mean"]], [index], marker="|", color=color, ms=14, mew=2)
    left.set_yticks(range(len(data)))
    left.set_yticklabels(data["variant"], fontsize=8)
    left.set_xlabel("final score, normalised per task over all variants (0 worst, 1 best)")
    left.set_title(f"Ablations on {int(data['tasks'].max())} task(s)")
    if not curves.empty:
        sns.lineplot(
            data=curves, x="progress", y="normalised", hue="variant", errorbar=None, ax=right, lw=1.2
        )
        right.set_xlabel("fraction of the run's env steps")
        right.set_ylabel("score, normalised per task")
        right.set_title("Learning curves (mean over tasks and seeds)")
        right.legend(fontsize=7, ncol=2)
    else:
        right.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return [path]


# ------------------------------------------------------------------ ours against every published method


def method_colors(labels: Sequence[str], present: Sequence[str] | None = None) -> dict[str, Any]:
    """One colour per method name: ``labels`` fixes the order (DreamerV3 and PPO first keep their
    colours in every figure); only the ``present`` ones (default all) take a colour, so the methods
    of one figure never share one."""
    shown = set(labels if present is None else present)
    labels = [label for label in dict.fromkeys(labels) if label in shown]
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1))))


def _save(fig: Any, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=PRINT_DPI)
    fig.savefig(pdf)
    plt.close(fig)
    return [png, pdf]


def domain_curve_figure(
    points: pd.DataFrame, domain: str, ylabel: str, stem: Path, labels: Sequence[str] = (), xlabel: str = ""
) -> list[Path]:
    """One domain: each source's normalised score aggregated over tasks against env steps, with its
    95% bootstrap band (``comparisons.domain_curves``). Ours solid, published dashed."""
    if points.empty:
        return []
    _style()
    colors = method_colors([*labels, *points["label"]], present=points["label"])
    fig, ax = plt.subplots(figsize=(8.0, 4.0))
    for source, group in points.groupby("source", sort=False):
        item = group.iloc[0]
        line = ax.plot(group["step"], group["value"], color=colors[item["label"]], lw=1.6, label=source,
                       marker="." if len(group) < 4 else None)[0]  # fmt: skip
        if item["origin"] == "published":
            line.set_dashes(ORIGIN_DASHES["published"])
        ax.fill_between(
            group["step"], group["lo"], group["hi"], color=colors[item["label"]], alpha=0.15, lw=0
        )
    tasks = int(points["tasks"].max())
    ax.set_title(
        f"{domain}: mean over {tasks} task{'s' if tasks > 1 else ''} (95% bootstrap CI)", fontsize=10
    )
    ax.set_xlabel(xlabel or "env steps")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, float(points["step"].max()))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, stem)


def final_bar_figure(
    bars: pd.DataFrame,
    domain: str,
    ylabel: str,
    stem: Path,
    labels: Sequence[str] = (),
    absent: Sequence[str] = (),
) -> list[Path]:
    """One domain: each source's final normalised score (``comparisons.final_bars``), the published
    methods read at the env steps our runs reached, with 95% bootstrap intervals; the published
    methods with no score there (``absent``) are named under the bars."""
    if bars.empty:
        return []
    _style()
    colors = method_colors([*labels, *bars["label"]], present=bars["label"])
    data = bars.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(data) + 1.6), 4.4 if absent else 4.0))
    _draw_bars(ax, data, colors)
    ax.set_xticks(range(len(data)))
    ax.set_xticklabels(data["source"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(
        f"{domain}: final score at {float(data['step'].max()):,.0f} env steps\n(published curves read at our "
        "final env step per task; mean over tasks, 95% CI)",
        fontsize=9,
    )
    if absent:
        step = float(data["step"].max())
        fig.text(0.5, 0.01, f"No published score by {step:,.0f} env steps: {', '.join(absent)}",
                 ha="center", va="bottom", fontsize=7, wrap=True)  # fmt: skip
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, stem)


def cross_domain_figure(
    summary: pd.DataFrame, ylabels: Mapping[str, str], stem: Path, labels: Sequence[str] = ()
) -> list[Path]:
    """One panel per domain (``comparisons.cross_domain``): DreamerV3 ours and published, the best
    other published method and PPO, each at our budget."""
    if summary.empty:
        return []
    _style()
    colors = method_colors([*labels, *summary["label"]], present=summary["label"])
    domains = list(dict.fromkeys(summary["domain"]))
    cols = min(3, len(domains))
    rows = math.ceil(len(domains) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains):
        data = summary[summary["domain"] == domain].reset_index(drop=True)
        _draw_bars(ax, data, colors)
        names = [
            f"{item['label']} (best other published)"
            if item["role"] == "best other published"
            else item["source"]
            for _, item in data.iterrows()
        ]
        ax.set_xticks(range(len(data)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{domain} (at {float(data['step'].max()):,.0f} env steps)", fontsize=9)
        ax.set_ylabel(ylabels.get(domain, "score"), fontsize=8)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    fig.suptitle("Final scores at our budget: mean over tasks, 95% bootstrap CI", fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)


def _draw_bars(ax, data, colors) -> None:
    """One bar with its confidence interval per row of ``data``; published methods hatched and paler."""
    for index, item in data.iterrows():
        ours = item["origin"] == "ours"
        ax.bar(index, item["value"], color=colors[item["label"]], alpha=1.0 if ours else 0.55,
               hatch=None if ours else "//", edgecolor="black", lw=0.6)  # fmt: skip
        ax.errorbar(index, item["value"], yerr=[[item["value"] - item["lo"]], [item["hi"] - item["value"]]],
                    color="black", capsize=3, lw=1)  # fmt: skip
