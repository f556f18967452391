"""Read a sweep's runs and the published curves into tables of scores.

    runs = find_runs("runs/")                        # every run folder, plus suite.json's unavailable
    reference = Published.from_env()                 # $DREAMER_REFERENCE_SCORES (may be absent)
    curves = binned_curves(runs, reference, suite)   # long table for the learning-curve figures
    final = final_scores(runs)                       # one row per run: score at the end of its budget

Env steps are agent steps after action repeat throughout. The published Atari and DMLab curves
count frames; they are divided by the domain's ``published.frames_per_step`` of suites.yaml (4).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dreamer_tf.config import describe_yaml_error, yaml_load
from dreamer_tf.harness.suite import (
    LOG_FILE,
    RUN_FILE,
    STATUS_FILE,
    SUMMARY_FILE,
    Suite,
    error_headline,
    read_json,
)

REFERENCE_ENV = "DREAMER_REFERENCE_SCORES"
REDOWNLOAD = "download the published scores again with scripts/download_scores.py"
FINAL_WINDOW = 0.1  # the last 10% of a run's env steps make its final score


@dataclasses.dataclass
class Run:
    """One run of a sweep as the report sees it."""

    run_id: str
    domain: str
    task: str
    agent: str
    seed: int
    ablation: str = ""
    budget: str = ""
    target_steps: int = 0
    state: str = "unknown"
    step: int = 0
    error: str = ""
    logdir: Path | None = None
    backend: str = ""
    until: int = 0  # > 0: the run as it stood at this env step (episodes after it left out)

    @property
    def variant(self) -> str:
        return f"{self.agent}-{self.ablation}" if self.ablation else self.agent

    def episodes(self) -> pd.DataFrame:
        """The run's training episodes (``scores.jsonl``): ``step``, ``score``, ``length`` and extras."""
        if self.logdir is None or not (self.logdir / "scores.jsonl").exists():
            return pd.DataFrame(columns=["step", "score", "length"])
        rows = []
        for line in (self.logdir / "scores.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a kill
        frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame(columns=["step", "score", "length"])
        if self.until > 0:
            frame = frame[frame["step"] <= self.until].reset_index(drop=True)
        return frame.rename(columns={"episode/score": "score", "episode/length": "length"})

    def at(self, step: int) -> Run:
        """The run as it stood at env step ``step``: its later episodes left out, its step capped."""
        return dataclasses.replace(self, step=min(self.step, int(step)), until=int(step))


def find_runs(root: str | Path, suite: Suite | None = None) -> list[Run]:
    """Every run under ``root``: folders with a ``run.json`` (the suite's) or a ``status.json`` and
    ``config.yaml`` (plain CLI runs), and the suite record's runs that have no folder (unavailable)."""
    root = Path(root)
    runs: dict[str, Run] = {}
    for status_path in sorted(root.rglob(STATUS_FILE)):
        logdir = status_path.parent
        run = _read_run(root, logdir, suite)
        if run is not None:
            runs[run.run_id] = run
    summary = read_json(root / SUMMARY_FILE) or {}
    for run_id, entry in (summary.get("runs") or {}).items():
        if run_id in runs:
            run = runs[run_id]
            if entry.get("state") == "unavailable":
                run.state, run.error = "unavailable", entry.get("error", "")
            continue
        runs[run_id] = Run(
            run_id=run_id,
            domain=entry.get("domain", ""),
            task=entry.get("task", ""),
            agent=entry.get("agent", ""),
            seed=int(entry.get("seed", 0)),
            ablation=entry.get("ablation", "") or "",
            budget=entry.get("budget", ""),
            target_steps=int(entry.get("steps", 0)),
            state=entry.get("state", "unknown"),
            step=int(entry.get("step", 0) or 0),
            error=entry.get("error", "") or "",
        )
    return sorted(runs.values(), key=lambda r: (r.domain, r.task, r.agent, r.ablation, r.seed))


def _read_run(root: Path, logdir: Path, suite: Suite | None) -> Run | None:
    status = read_json(logdir / STATUS_FILE) or {}
    spec = read_json(logdir / RUN_FILE)
    if spec is None:
        config_path = logdir / "config.yaml"
        if not config_path.exists():
            return None
        config = yaml_load(config_path.read_text()) or {}
        task = str(config.get("task", ""))
        spec = {
            "task": task,
            "domain": guess_domain(task, suite),
            "agent": config.get("agent_name", "dreamerv3"),
            "seed": config.get("seed", 0),
            "steps": int(float((config.get("run") or {}).get("steps", 0))),
        }
    state = status.get("status", "unknown")
    if state == "running" and not _alive_lock(logdir):
        state = "interrupted"  # a process that died without writing its status
    return Run(
        run_id=logdir.relative_to(root).as_posix() if logdir != root else logdir.name,
        domain=spec.get("domain", ""),
        task=spec.get("task", ""),
        agent=spec.get("agent", "dreamerv3"),
        seed=int(spec.get("seed", 0)),
        ablation=spec.get("ablation", "") or "",
        budget=spec.get("budget", ""),
        target_steps=int(spec.get("steps", 0)),
        state=state,
        step=int(status.get("step", 0)),
        error=error_headline(status.get("error")) if state == "failed" else "",
        logdir=logdir,
        backend=_backend(logdir),
    )


def _alive_lock(logdir: Path) -> bool:
    from dreamer_tf.harness.suite import lock_owner

    return lock_owner(logdir) is not None


def _backend(logdir: Path) -> str:
    path = logdir / LOG_FILE
    if not path.exists():
        return ""
    backend = ""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Backend: "):
            # "tensorflow on gpu:0 (NVIDIA H200)": the backend is the column, the device is not.
            backend = line.split(":", 1)[1].strip().split(" on ")[0]
    return backend


def guess_domain(task: str, suite: Suite | None) -> str:
    """The suite domain whose task list holds ``task`` (the first one), else its registry domain."""
    if suite is not None:
        for name in suite.domains:
            try:
                if task in suite.tasks(name):
                    return name
            except Exception:  # noqa: BLE001 - a pattern over a catalog that is not installed
                continue
    from dreamer_tf.envs import split_task

    try:
        return split_task(task)[0]
    except ValueError:
        return task.split("_")[0]


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: id, domain, task, agent, seed, state, steps reached of target, error."""
    rows = [
        {
            "run": run.run_id,
            "domain": run.domain,
            "task": run.task,
            "agent": run.variant,
            "seed": run.seed,
            "budget": run.budget,
            "state": run.state,
            "step": run.step,
            "target_steps": run.target_steps,
            "backend": run.backend,
            "error": run.error,
        }
        for run in runs
    ]
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["run", "state"])


# ------------------------------------------------------------------ published curves


class ReferenceScoresError(ValueError):
    """A file of the published scores folder that cannot be read; the message names it."""


class Published:
    """The official ``scores/`` folder: ``<file>-<method>.json.gz`` records and ``baselines.yaml``.

    ``available`` is False (and ``reason`` says why) when the folder is not given, missing or empty;
    every lookup then returns nothing, so reports still render.
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self._cache: dict[str, list[dict[str, Any]]] = {}
        if self.directory is None:
            self.available = False
            self.reason = f"${REFERENCE_ENV} is not set"
        elif not self.directory.is_dir():
            self.available = False
            self.reason = f"${REFERENCE_ENV} points to {self.directory}, which does not exist"
        elif not list(self.directory.glob("*.json.gz")):
            self.available = False
            self.reason = f"{self.directory} holds no *.json.gz score files"
        else:
            self.available = True
            self.reason = f"published curves from {self.directory}"
        self.baselines = self._load_baselines()

    @classmethod
    def from_env(cls) -> Published:
        return cls(os.environ.get(REFERENCE_ENV) or None)

    def _load_baselines(self) -> dict[str, dict[str, tuple[float, float]]]:
        if self.directory is None:
            return {}
        for folder in (self.directory, self.directory.parent):
            path = folder / "baselines.yaml"
            if path.exists():
                try:
                    data = yaml_load(path.read_text()) or {}
                    return {
                        section: {task: (float(v[0]), float(v[1])) for task, v in (values or {}).items()}
                        for section, values in data.items()
                    }
                except (
                    yaml.YAMLError,
                    UnicodeDecodeError,
                    AttributeError,
                    TypeError,
                    ValueError,
                    IndexError,
                ) as error:
                    raise ReferenceScoresError(
                        f"{path} is not a readable baselines file ({describe_yaml_error(error)}); "
                        f"{REDOWNLOAD}"
                    ) from None
        return {}

    def records(self, file: str, method: str) -> list[dict[str, Any]]:
        key = f"{file}-{method}"
        if key not in self._cache:
            path = self.directory / f"{key}.json.gz" if self.directory else None
            if not self.available or path is None or not path.exists():
                self._cache[key] = []
            else:
                try:
                    with gzip.open(path, "rt") as handle:
                        records = json.load(handle)
                except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
                    raise ReferenceScoresError(
                        f"{path} is not a readable gzip JSON score file ({type(error).__name__}: {error}); "
                        f"{REDOWNLOAD}"
                    ) from None
                if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
                    raise ReferenceScoresError(f"{path} does not hold a list of score records; {REDOWNLOAD}")
                self._cache[key] = records
        return self._cache[key]

    def runs(self, domain: Mapping[str, Any], task: str, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per published seed, ``(env_steps, scores)`` of ``task`` for ``method``; NaN points dropped."""
        info = domain.get("published") or {}
        if not info or not method:
            return []
        name = published_task(task, info)
        frames = float(info.get("frames_per_step", 1))
        out = []
        for record in self.records(info["file"], method):
            if record.get("task") != name:
                continue
            xs = np.asarray(record["xs"], np.float64) / frames
            ys = np.asarray([np.nan if y is None else y for y in record["ys"]], np.float64)
            keep = np.isfinite(xs) & np.isfinite(ys)
            if keep.any():
                out.append((xs[keep], ys[keep]))
        return out

    def baseline(self, section: str, task: str, domain: Mapping[str, Any]) -> tuple[float, float] | None:
        name = published_task(task, domain.get("published") or {})
        return self.baselines.get(section, {}).get(name)


def published_task(task: str, info: Mapping[str, Any]) -> str:
    """Our task name as the published data names it (atari100k_pong -> atari_pong)."""
    prefix = info.get("task_prefix") if info else None
    return f"{prefix}_{task.split('_', 1)[1]}" if prefix else task


def window_score(
    xs: np.ndarray, ys: np.ndarray, end: float, window: float = FINAL_WINDOW, hold_last: bool = False
) -> float:
    """Mean of the points in ``(end * (1 - window), end]``; else the curve interpolated at ``end``;
    else (``hold_last``, for our runs whose last episode ended earlier) the last point before
    ``end``; else NaN."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if not len(xs):
        return float("nan")
    mask = (xs > end * (1 - window)) & (xs <= end)
    if mask.any():
        return float(ys[mask].mean())
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if xs[0] <= end <= xs[-1]:
        return float(np.interp(end, xs, ys))
    if hold_last and xs[-1] < end:
        return float(ys[-1])
    return float("nan")


# ------------------------------------------------------------------ curves and final scores


def bin_curve(steps: np.ndarray, scores: np.ndarray, edges: np.ndarray, interpolate: bool) -> np.ndarray:
    """Mean score per bin ``(edges[i], edges[i+1]]``; empty bins NaN, or (``interpolate``) the curve
    interpolated at the bin's end when that lies within the curve."""
    steps, scores = np.asarray(steps, np.float64), np.asarray(scores, np.float64)
    out = np.full(len(edges) - 1, np.nan)
    if not len(steps):
        return out
    order = np.argsort(steps)
    steps, scores = steps[order], scores[order]
    for index in range(len(edges) - 1):
        mask = (steps > edges[index]) & (steps <= edges[index + 1])
        if mask.any():
            out[index] = scores[mask].mean()
        elif interpolate and steps[0] <= edges[index + 1] <= steps[-1]:
            out[index] = np.interp(edges[index + 1], steps, scores)
    return out


def binned_curves(
    runs: Sequence[Run],
    reference: Published,
    suite: Suite,
    agents: Mapping[str, str],
    bins: int = 30,
    x_range: str = "ours",
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Long table ``domain, task, source, seed, step, score`` for the learning-curve figures.

    Sources are ``<label> (ours)`` for our unablated runs and ``<label> (published)`` for the
    published curves of the same agents (``agents``: agent -> published method) and of ``extra``
    (domain -> {published method: label}). The x range is our furthest step (``x_range="ours"``) or
    the published curves' end (``"published"``).
    """
    rows: list[pd.DataFrame] = []
    labels = {name: spec.get("label", name) for name, spec in suite.agents.items()}
    by_task: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.logdir is not None and not run.ablation:
            by_task.setdefault((run.domain, run.task), []).append(run)
    for (domain, task), task_runs in sorted(by_task.items()):
        entry = suite.domains.get(domain, {})
        episodes = {id(run): run.episodes() for run in task_runs}
        ours_end = max([run.step for run in task_runs] + [0])
        # Labelled by the method's display name: agents that share a published method share its curve.
        sources = {suite.method_label(method): method for method in agents.values() if method}
        sources.update({label: method for method, label in (extra or {}).get(domain, {}).items()})
        published = {
            label: reference.runs(entry, task, method)
            for label, method in sources.items()
            if reference.available
        }
        end = ours_end
        if x_range == "published":
            end = max([ours_end] + [xs.max() for runs_ in published.values() for xs, _ in runs_])
        if end <= 0:
            continue
        edges = np.linspace(0, end, bins + 1)
        for run in task_runs:
            frame = episodes[id(run)]
            values = bin_curve(frame["step"].to_numpy(float), frame["score"].to_numpy(float), edges, False)
            rows.append(
                _curve_rows(
                    domain, task, f"{labels.get(run.agent, run.agent)} (ours)", run.seed, edges, values
                )
            )
        for label, seeds in published.items():
            for seed, (xs, ys) in enumerate(seeds):
                values = bin_curve(xs, ys, edges, True)
                rows.append(_curve_rows(domain, task, f"{label} (published)", seed, edges, values))
    columns = ["domain", "task", "source", "method", "origin", "seed", "step", "score"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)


def _curve_rows(
    domain: str, task: str, source: str, seed: int, edges: np.ndarray, values: np.ndarray
) -> pd.DataFrame:
    method, origin = source.rsplit(" (", 1)
    return pd.DataFrame(
        {
            "domain": domain,
            "task": task,
            "source": source,
            "method": method,
            "origin": origin.rstrip(")"),
            "seed": seed,
            "step": edges[1:],
            "score": values,
        }
    )


def final_scores(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run with episodes: ``domain, task, agent, ablation, seed, step, score, episodes``.

    ``score`` is the mean training-episode score over the last 10% of the run's env steps (the last
    episode's when none ended there); ``crafter_score`` (Crafter runs) is the Crafter score over all
    the run's episodes, as the Crafter benchmark defines it.
    """
    rows = []
    for run in runs:
        if run.logdir is None:
            continue
        frame = run.episodes()
        end = max(run.step, int(frame["step"].max()) if len(frame) else 0)
        row = {
            "run": run.run_id,
            "domain": run.domain,
            "task": run.task,
            "agent": run.agent,
            "ablation": run.ablation,
            "seed": run.seed,
            "state": run.state,
            "step": end,
            "episodes": len(frame),
            "score": window_score(
                frame["step"].to_numpy(float), frame["score"].to_numpy(float), end, hold_last=True
            )
            if len(frame)
            else float("nan"),
        }
        if run.task.startswith("crafter_") and len(frame):
            row["crafter_score"] = crafter_score(frame)
        rows.append(row)
    columns = ["run", "domain", "task", "agent", "ablation", "seed", "state", "step", "episodes", "score"]
    return pd.DataFrame(
        rows, columns=columns + (["crafter_score"] if any("crafter_score" in r for r in rows) else [])
    )


def crafter_score(episodes: pd.DataFrame) -> float:
    """The Crafter score of a run's episodes (success rate of each achievement, geometric mean)."""
    from dreamer_tf.envs.crafter import ACHIEVEMENTS
    from dreamer_tf.envs.crafter import crafter_score as score

    rates = []
    for name in ACHIEVEMENTS:
        column = f"episode/log/achievement_{name}/max"
        hits = (
            episodes[column].fillna(0.0) > 0 if column in episodes else pd.Series(False, index=episodes.index)
        )
        rates.append(100.0 * float(hits.mean()))
    return score(rates)


def published_at(
    reference: Published, domain: Mapping[str, Any], task: str, method: str, step: float
) -> np.ndarray:
    """Each published seed's score at ``step`` (the same window as ours); NaN seeds dropped."""
    values = [window_score(xs, ys, step) for xs, ys in reference.runs(domain, task, method)]
    values = np.asarray(values, np.float64)
    return values[np.isfinite(values)]


def published_end(
    reference: Published, domain: Mapping[str, Any], task: str, method: str
) -> tuple[np.ndarray, float]:
    """Each published seed's score at the end of its curve, and that end (env steps)."""
    runs = reference.runs(domain, task, method)
    if not runs:
        return np.array([]), float("nan")
    end = float(np.median([xs.max() for xs, _ in runs]))
    values = np.asarray([window_score(xs, ys, xs.max()) for xs, ys in runs], np.float64)
    return values[np.isfinite(values)], end


# ------------------------------------------------------------------ bsuite


def bsuite_scores(runs: Sequence[Run]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """bsuite's own analysis of the runs' CSV logs: per experiment and per capability (tag).

    Returns ``(experiments, capabilities, note)``: rows ``agent, seed, bsuite_env, score`` and
    ``agent, seed, tag, score`` (``agent`` includes an ablation). Scores are bsuite's, in [0, 1];
    experiments whose configurations ran for fewer episodes than bsuite prescribes are scored on
    what exists (``finished`` says which are complete).
    """
    groups: dict[tuple[str, int], list[Path]] = {}
    for run in runs:
        if run.logdir is None or not run.task.startswith("bsuite_"):
            continue
        files = sorted((run.logdir / "bsuite").glob("bsuite_id_*.csv"))
        if files:
            groups.setdefault((run.variant, run.seed), []).extend(files)
    empty = pd.DataFrame(columns=["agent", "seed", "bsuite_env", "score", "finished"])
    empty_tags = pd.DataFrame(columns=["agent", "seed", "tag", "score"])
    if not groups:
        return empty, empty_tags, "no bsuite CSV logs found"
    try:
        from bsuite.experiments import summary_analysis
        from bsuite.logging import csv_load
    except ImportError as error:
        return empty, empty_tags, f"bsuite is not installed ({error}): pip install bsuite==0.3.6"
    experiments, capabilities = [], []
    for (agent, seed), files in sorted(groups.items()):
        with tempfile.TemporaryDirectory() as folder:
            for file in files:
                os.symlink(file.resolve(), Path(folder) / file.name)
            frame = csv_load.load_one_result_set(folder)
            scores = summary_analysis.bsuite_score(frame)
            tags = summary_analysis.ave_score_by_tag(scores, None)
        for row in scores.itertuples():
            experiments.append(
                {
                    "agent": agent,
                    "seed": seed,
                    "bsuite_env": row.bsuite_env,
                    "score": float(row.score),
                    "finished": bool(row.finished),
                }  # fmt: skip
            )
        for row in tags.itertuples():
            if np.isfinite(row.score):
                capabilities.append({"agent": agent, "seed": seed, "tag": row.tag, "score": float(row.score)})
    return (
        pd.DataFrame(experiments),
        pd.DataFrame(capabilities, columns=empty_tags.columns),
        "bsuite analysis",
    )
