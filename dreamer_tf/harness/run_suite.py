"""Sweep the benchmark suite: every domain, DreamerV3 and PPO, one fixed configuration.

    python benchmarks/run_suite.py --all --budget hour                     # about an hour on 2 CPU cores
    python benchmarks/run_suite.py --all --dry-run                         # the plan of budget short, no run
    python benchmarks/run_suite.py --all --budget paper --outdir runs/paper --executor ray --address auto
    python benchmarks/run_suite.py --domains dmc_proprio,atari100k --seeds 3 --dry-run
    python benchmarks/run_suite.py --tasks 'bsuite_catch/*' --agents dreamerv3 --budget short
    python benchmarks/run_suite.py --ablations --budget short              # the paper's ablations
    python benchmarks/run_suite.py --all --budget smoke                    # CI: seconds per run

Before anything starts, the sweep prints its plan: per domain the runs, env steps, updates and the
wall time they take on this machine with this executor (updates/s measured once here with
benchmarks/throughput.py and cached, see dreamer_tf/harness/plan.py), and one line per domain that
cannot run here. A plan longer than --max-hours (default 24) stops there, naming flags that would fit,
unless --yes is given.

Domains, tasks, budgets, seeds, train ratios and presets are in dreamer_tf/harness/suites.yaml. Each run is
one ``python -m dreamer_tf`` process with its own folder
``<outdir>/<domain>/<task>/<agent>[-<ablation>]/seed<k>``. Sweeping again with the same ``--outdir``
skips finished runs and resumes interrupted or failed ones from their checkpoints. A failed run is
recorded (its ``status.json`` and ``<outdir>/suite.json``) and the sweep goes on. Domains that cannot
run on this machine are listed as unavailable with the reason. Flags of the form ``--a.b value`` and
``--configs`` presets are passed to every run (e.g. ``--configs small --run.envs 4``).

Exit status: 0 when no run failed, 1 when some did, 2 for a usage error or a plan over --max-hours,
130 when stopped.
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
from dreamer_tf.harness.plan import (
    Throughput,
    ThroughputCache,
    cache_path,
    fitting_options,
    format_plan,
    hardware,
    human_time,
    needed_sizes,
    plan_cost,
)
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
    pick.add_argument(
        "--budget",
        default="short",
        help="paper | short | hour | smoke | ppo_check (default short; see suites.yaml)",
    )
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
    where.add_argument("--dry-run", action="store_true", help="print the plan and its cost, run nothing")
    where.add_argument("--list-runs", action="store_true", help="also list every run with its cost")
    where.add_argument(
        "--max-hours",
        type=float,
        default=24.0,
        help="stop after the plan if its wall-time estimate is longer (default 24)",
    )
    where.add_argument("--yes", action="store_true", help="start even a plan over --max-hours")
    where.add_argument(
        "--measure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure updates/s on this machine for the estimate (default: once, when not cached); "
        "--no-measure: use the cache or the built-in profile",
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


# ------------------------------------------------------------------ the plan


def list_runs(suite: Suite, plan: Plan, rates: Throughput, out: TextIO) -> None:
    """Every run with its state, env steps, updates and estimated run time."""
    print(f"{'state':<8} {'env steps':>10} {'updates':>9} {'estimate':>9}  run", file=out)
    for spec in plan.runs:
        rate, _ = rates.updates_per_s(spec.size, spec.obs)
        cost = suite.estimate(spec, rates.profile, updates_per_s=rate)
        line = (
            f"{spec.state()[0]:<8} {spec.steps:>10.3g} {cost['updates']:>9.3g} "
            f"{human_time(cost['seconds']):>9}  {spec.run_id}"
        )
        print(line, file=out)
    print(file=out)


def parallel_runs(plan: Plan, args: argparse.Namespace) -> int:
    """How many runs go at a time: the local pool's size, or for Ray --workers (else its local CPUs)."""
    if args.executor == "local":
        from dreamer_tf.harness.executors import LocalExecutor

        return LocalExecutor(args.workers).pool_size(plan.runs)
    if args.workers:
        return int(args.workers)
    cpus = max((spec.cpus for spec in plan.runs), default=1.0) or 1.0
    return max(1, int((args.ray_cpus or os.cpu_count() or 1) // cpus))


def show_plan(
    suite: Suite, plan: Plan, args: argparse.Namespace, overrides: dict[str, str], executor_info: str
) -> int | None:
    """Print the plan; an exit status if the sweep must not start (over --max-hours), else ``None``."""
    from dreamer_tf.harness.executors import visible_gpus

    cache = ThroughputCache(cache_path(), hardware())
    gpus_here = visible_gpus() > 0

    def rates_for(runs: list[RunSpec]) -> Throughput:
        # A run gets as many threads as it declares CPUs (executors.run_env), and the GPU if it declares one.
        cpus = max((spec.cpus for spec in runs), default=1.0)
        gpu = gpus_here and any(spec.gpus > 0 for spec in runs)
        return Throughput(suite, cache, threads=min(int(max(cpus, 1)), os.cpu_count() or 1), gpu=gpu)

    rates = rates_for(plan.runs)
    cpus = max((spec.cpus for spec in plan.runs), default=1.0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rates.prepare(needed_sizes(plan.runs), measure=args.measure, log=log)
    if args.executor == "ray" and args.address:
        rates.notes.append("updates/s are this machine's; the Ray cluster's nodes may differ")
    parallel = parallel_runs(plan, args)
    cost = plan_cost(suite, plan, rates, parallel)
    if args.list_runs:
        list_runs(suite, plan, rates, sys.stdout)
    for line in format_plan(plan, cost, rates, executor_info):
        print(line)
    wall = cost.wall_s()
    if wall <= args.max_hours * 3600.0:
        return None
    others: dict[str, float] = {}
    for name in suite.budgets:
        if name == plan.budget:
            continue
        try:
            other = make_plan(suite, argparse.Namespace(**{**vars(args), "budget": name}), overrides)
        except (SuiteError, ConfigError):
            continue
        # Their rates from the cache, or scaled or assumed: nothing more is measured for advice.
        others[name] = plan_cost(suite, other, rates_for(other.runs), parallel_runs(other, args)).wall_s()
    options = fitting_options(cost, args.max_hours, plan.budget, others, cpus)
    verdict = "would stop here" if args.dry_run else "stopped"
    print(
        f"The plan takes about {human_time(wall)} of wall time, over --max-hours {args.max_hours:g}: "
        f"{verdict}. To fit, use one of:",
        file=sys.stderr,
    )
    for option in options:
        print(f"  {option}", file=sys.stderr)
    print("  or start it anyway with --yes (or a larger --max-hours).", file=sys.stderr)
    return None if args.dry_run or args.yes else 2


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
    stop = show_plan(suite, plan, args, overrides, executor.describe(plan.runs))
    if stop is not None:
        return stop
    if args.dry_run:
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
