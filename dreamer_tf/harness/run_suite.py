"""Sweep the benchmark suite: every domain, DreamerV3 and PPO, one fixed configuration.

    python benchmarks/run_suite.py --all                                   # budget short, runs/
    python benchmarks/run_suite.py --all --budget paper --outdir runs/paper --executor ray --address auto
    python benchmarks/run_suite.py --domains dmc_proprio,atari100k --seeds 3 --dry-run
    python benchmarks/run_suite.py --tasks 'bsuite_catch/*' --agents dreamerv3 --budget short
    python benchmarks/run_suite.py --ablations --budget short              # the paper's ablations
    python benchmarks/run_suite.py --all --budget smoke                    # CI: seconds per run

Domains, tasks, budgets, seeds, train ratios and presets are in dreamer_tf/harness/suites.yaml. Each run is
one ``python -m dreamer_tf`` process with its own folder
``<outdir>/<domain>/<task>/<agent>[-<ablation>]/seed<k>``. Sweeping again with the same ``--outdir``
skips finished runs and resumes interrupted or failed ones from their checkpoints. A failed run is
recorded (its ``status.json`` and ``<outdir>/suite.json``) and the sweep goes on. Domains that cannot
run on this machine are listed as unavailable with the reason. Flags of the form ``--a.b value`` and
``--configs`` presets are passed to every run (e.g. ``--configs small --run.envs 4``).

Exit status: 0 when no run failed, 1 when some did, 2 for a usage error, 130 when stopped.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from dreamer_tf.config import ConfigError, parse_overrides
from dreamer_tf.harness.executors import make_executor
from dreamer_tf.harness.suite import (
    SUITES_PATH,
    Plan,
    RunSpec,
    Suite,
    SuiteError,
    error_headline,
    update_summary,
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="run_suite.py",
        description=__doc__.split("\n\n")[0],
        epilog="Any --a.b value (a config key of dreamer_tf/configs.yaml) is passed to every run.",
        allow_abbrev=False,
    )
    pick = parser.add_argument_group("what to run")
    pick.add_argument("--all", action="store_true", help="every domain of suites.yaml")
    pick.add_argument("--domains", help="comma-separated domains, e.g. atari100k,dmc_proprio")
    pick.add_argument(
        "--tasks", help="comma-separated tasks or patterns ('bsuite_catch/*', dmc_vision:dmc_walker_walk)"
    )
    pick.add_argument(
        "--agents", default="dreamerv3,ppo", help="comma-separated agents (default dreamerv3,ppo)"
    )
    pick.add_argument(
        "--seeds", help="number of seeds N (seeds 0..N-1) or a list 0,3,4 (default: suites.yaml)"
    )
    pick.add_argument("--budget", default="short", help="paper | short | smoke (default short)")
    pick.add_argument("--steps", type=float, help="env steps per run, replacing the budget's")
    pick.add_argument(
        "--ablations",
        nargs="?",
        const="all",
        help="add the paper's ablations: every abl_* preset, or a comma-separated list, on the ablation tasks",
    )
    pick.add_argument(
        "--configs", nargs="+", default=[], help="extra presets for every run (after the suite's)"
    )
    pick.add_argument("--suite", default=str(SUITES_PATH), help="the suite file")
    where = parser.add_argument_group("where and how")
    where.add_argument("--outdir", default="runs", help="root of the run folders (default runs/)")
    where.add_argument("--executor", default="local", choices=["local", "ray"])
    where.add_argument(
        "--workers", type=int, help="local executor: parallel runs (default: cores / CPUs per run)"
    )
    where.add_argument(
        "--address",
        help="ray executor: cluster address ('auto', 'ray://host:10001'); default a local instance",
    )
    where.add_argument(
        "--ray-cpus", type=int, help="ray executor without --address: CPUs of the local instance"
    )
    where.add_argument("--cpus-per-run", type=float, help="CPUs each run declares (default: the budget's)")
    where.add_argument("--gpus-per-run", type=float, help="GPUs each run declares (default: the budget's)")
    where.add_argument(
        "--run-timeout", type=float, help="seconds after which a run is stopped and counted failed"
    )
    where.add_argument(
        "--dry-run", action="store_true", help="print the runs and their estimated cost, run nothing"
    )
    where.add_argument(
        "--profile",
        choices=["gpu", "cpu"],
        help="throughput profile of the estimate (default: gpu if runs declare one)",
    )
    where.add_argument("--quiet", action="store_true", help="no live progress line")
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = parse_overrides(rest)
    except ConfigError as error:
        parser.error(str(error))
    if not (args.all or args.domains or args.tasks or args.ablations):
        parser.error("choose what to run: --all, --domains, --tasks or --ablations")
    return args, overrides


def split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    if "," in text:
        return [int(item) for item in split(text)]
    return list(range(int(text)))


def make_plan(suite: Suite, args: argparse.Namespace, overrides: dict[str, str]) -> Plan:
    ablations = None
    if args.ablations:
        ablations = suite.ablation_presets(None if args.ablations == "all" else split(args.ablations))
    return suite.plan(
        outdir=args.outdir,
        budget=args.budget,
        domains=split(args.domains) or None,
        tasks=split(args.tasks) or None,
        agents=split(args.agents),
        seeds=parse_seeds(args.seeds),
        ablations=ablations,
        main=bool(args.all or args.domains or args.tasks),
        extra_presets=[name for item in args.configs for name in item.split(",") if name],
        overrides=overrides,
        steps=int(args.steps) if args.steps else None,
        cpus=args.cpus_per_run,
        gpus=args.gpus_per_run,
    )


# ------------------------------------------------------------------ dry run


def human_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def dry_run(suite: Suite, plan: Plan, args: argparse.Namespace, executor_info: str, out: TextIO) -> None:
    profile = args.profile or ("gpu" if any(spec.gpus > 0 for spec in plan.runs) else "cpu")
    print(f"{'state':<8} {'env steps':>10} {'updates':>9} {'estimate':>9}  run", file=out)
    totals = {"env_steps": 0.0, "updates": 0.0, "seconds": 0.0}
    to_run = 0.0
    for spec in plan.runs:
        state, status = spec.state()
        cost = suite.estimate(spec, profile)
        for key in totals:
            totals[key] += cost[key]
        if state != "done":
            done_fraction = min(1.0, int(status.get("step", 0)) / max(spec.steps, 1))
            to_run += cost["seconds"] * (1.0 - done_fraction)
        line = f"{state:<8} {spec.steps:>10.3g} {cost['updates']:>9.3g} {human_time(cost['seconds']):>9}  {spec.run_id}"
        print(line, file=out)
    for spec, reason in plan.unavailable:
        print(f"{'n/a':<8} {spec.steps:>10.3g} {'':>9} {'':>9}  {spec.run_id}  ({reason})", file=out)
    workers = 1
    if args.executor == "local":
        from dreamer_tf.harness.executors import LocalExecutor

        workers = LocalExecutor(args.workers).pool_size(plan.runs)
    print(file=out)
    print(
        f"{len(plan.runs)} runs ({len(plan.unavailable)} more unavailable here), budget '{plan.budget}', "
        f"outdir {plan.outdir}",
        file=out,
    )
    print(
        f"Total: {totals['env_steps']:.3g} env steps, {totals['updates']:.3g} updates, about "
        f"{human_time(totals['seconds'])} of run time on the '{profile}' throughput profile of suites.yaml "
        f"(left to run: {human_time(to_run)}; with {workers} parallel run(s) on {executor_info}: "
        f"about {human_time(to_run / max(workers, 1))} of wall time). Rough: measure with benchmarks/throughput.py.",
        file=out,
    )
    domains = sorted({spec.domain for spec, _ in plan.unavailable})
    for domain in domains:
        reason = next(reason for spec, reason in plan.unavailable if spec.domain == domain)
        print(f"Unavailable: {domain}: {reason}", file=out)


# ------------------------------------------------------------------ live progress


class Progress:
    """Counts of done / running / failed / pending runs on stderr, redrawn while the sweep runs."""

    def __init__(self, total: int, done_before: int, unavailable: int, stream: TextIO, quiet: bool) -> None:
        self.counts = {"done": done_before, "running": 0, "failed": 0, "interrupted": 0}
        self.pending = total - done_before
        self.done_before = done_before
        self.unavailable = unavailable
        self.stream = stream
        self.quiet = quiet
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.tty = stream.isatty()
        self._last_print = -1e9
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def line(self) -> str:
        c = self.counts
        elapsed = human_time(time.monotonic() - self.start)
        extra = f" | {c['interrupted']} interrupted" if c["interrupted"] else ""
        return (
            f"[suite] {c['done']} done ({self.done_before} before) | {c['running']} running | "
            f"{c['failed']} failed | {self.pending} pending | {self.unavailable} unavailable{extra} | {elapsed}"
        )

    def event(self, message: str) -> None:
        with self.lock:
            prefix = "\r\033[K" if self.tty and not self.quiet else ""
            print(prefix + message, file=self.stream, flush=True)
            self._draw(force=True)

    def started(self, spec: RunSpec) -> None:
        with self.lock:
            self.counts["running"] += 1
            self.pending -= 1
        self.event(f"[suite] start   {spec.run_id} ({spec.steps:g} steps)")

    def finished(self, spec: RunSpec, outcome: dict[str, Any]) -> None:
        state = outcome["state"]
        with self.lock:
            self.counts["running"] -= 1
            if state == "running":
                pass  # held by a process elsewhere: skipped, counted nowhere
            elif state in self.counts:
                self.counts[state] += 1
            else:
                self.pending += 1
        wall = human_time(outcome["wall_s"]) if outcome.get("wall_s") is not None else "?"
        if state == "failed":
            self.event(f"[suite] FAILED  {spec.run_id} after {wall}: {error_headline(outcome['error'])}")
        elif state == "running":
            self.event(f"[suite] skipped {spec.run_id}: {outcome['error']}")
        else:
            self.event(f"[suite] {state:<7} {spec.run_id} at step {outcome['step']} after {wall}")

    def _draw(self, force: bool = False) -> None:
        if self.quiet:
            return
        line = self.line()
        if self.tty:
            print("\r\033[K" + line, end="", file=self.stream, flush=True)
        elif force and time.monotonic() - self._last_print >= 10.0:
            # Into a log file: the counts at most every 10 s on events, and every minute (see _loop).
            print(line, file=self.stream, flush=True)
            self._last_print = time.monotonic()

    def _loop(self) -> None:
        interval = 1.0 if self.tty else 60.0
        while not self._stop.wait(interval):
            with self.lock:
                if self.tty:
                    self._draw()
                elif not self.quiet:
                    print(self.line(), file=self.stream, flush=True)
                    self._last_print = time.monotonic()

    def __enter__(self) -> Progress:
        with self.lock:
            self._draw(force=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with self.lock:
            if self.tty and not self.quiet:
                print(file=self.stream)


# ------------------------------------------------------------------ main


def entry(spec: RunSpec, outdir: Path, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "domain": spec.domain,
        "task": spec.task,
        "agent": spec.agent,
        "ablation": spec.ablation,
        "seed": spec.seed,
        "budget": spec.budget,
        "steps": spec.steps,
        "logdir": os.path.relpath(spec.logdir, outdir),
        "state": state,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        suite = Suite.load(args.suite)
        plan = make_plan(suite, args, overrides)
        executor = make_executor(
            args.executor,
            workers=args.workers,
            address=args.address,
            num_cpus=args.ray_cpus,
            timeout=args.run_timeout,
        )
    except (SuiteError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(suite, plan, args, executor.describe(plan.runs), sys.stdout)
        return 0

    outdir = plan.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    done_before = 0
    for spec in plan.runs:
        state, status = spec.state()
        if state == "done":
            done_before += 1
            entries[spec.run_id] = entry(spec, outdir, "done", step=int(status.get("step", 0)), error="")
        elif state == "running":
            note = f"running elsewhere: {status['holder']} holds its folder; skipped"
            entries[spec.run_id] = entry(spec, outdir, "running", note=note)
            print(f"[suite] {spec.run_id}: {note}", file=sys.stderr)
        else:
            todo.append(spec)
            entries[spec.run_id] = entry(spec, outdir, "pending", step=int(status.get("step", 0)))
    for spec, reason in plan.unavailable:
        entries[spec.run_id] = entry(spec, outdir, "unavailable", error=reason)
    info = {
        "command": shlex.join([sys.executable, *sys.argv])
        if argv is None
        else shlex.join(["run_suite.py", *argv]),
        "budget": plan.budget,
        "executor": executor.describe(plan.runs),
        "suite_file": str(Path(args.suite).resolve()),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    summary_path = update_summary(outdir, entries, info)
    print(
        f"[suite] {len(plan.runs)} runs, budget '{plan.budget}', {done_before} already done, "
        f"{len(plan.unavailable)} unavailable; {info['executor']}; record: {summary_path}",
        file=sys.stderr,
    )
    for domain in sorted({spec.domain for spec, _ in plan.unavailable}):
        reason = next(reason for spec, reason in plan.unavailable if spec.domain == domain)
        print(f"[suite] unavailable: {domain}: {reason}", file=sys.stderr)

    summary_lock = threading.Lock()

    def on_start(spec: RunSpec) -> None:
        progress.started(spec)
        with summary_lock:
            update_summary(outdir, {spec.run_id: {"state": "running"}}, {})

    def on_end(spec: RunSpec, outcome: dict[str, Any]) -> None:
        progress.finished(spec, outcome)
        record = {
            "state": outcome["state"],
            "step": outcome["step"],
            "error": error_headline(outcome["error"]),
            "returncode": outcome["returncode"],
            "wall_s": outcome["wall_s"],
        }
        with summary_lock:
            update_summary(outdir, {spec.run_id: record}, {})

    # SIGTERM stops the sweep like Ctrl-C: runs checkpoint, the record is written, exit 130.
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    stopped = False
    progress = Progress(len(plan.runs), done_before, len(plan.unavailable), sys.stderr, args.quiet)
    try:
        with progress:
            executor.run(todo, on_start, on_end)
    except KeyboardInterrupt:
        stopped = True
    except SuiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    info = {"finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    summary = update_summary(outdir, {}, info)
    records = _read_runs(summary)
    failed = [
        (run_id, records[run_id]) for run_id in entries if records.get(run_id, {}).get("state") == "failed"
    ]
    for run_id, record in failed:
        print(f"[suite] failed: {run_id}: {record.get('error', '')}", file=sys.stderr)
    print(progress.line().replace("[suite]", "[suite] end:"), file=sys.stderr)
    print(
        f"[suite] report: python scripts/make_report.py --runs {outdir} --out reports/<name>", file=sys.stderr
    )
    if stopped:
        print("[suite] stopped; run the same command again to resume.", file=sys.stderr)
        return 130
    return 1 if progress.counts["failed"] else 0


def _read_runs(path: Path) -> dict[str, dict[str, Any]]:
    from dreamer_tf.harness.suite import read_json

    return dict((read_json(path) or {}).get("runs") or {})


if __name__ == "__main__":
    sys.exit(main())
