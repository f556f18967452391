"""What a sweep will cost on this machine, before it starts: one line per domain, and a limit.

    cache = ThroughputCache(cache_path(), hardware())
    rates = Throughput(suite, cache, threads=1, gpu=False)
    rates.prepare(needed_sizes(plan.runs), measure=True, log=print)   # measures what is not cached
    cost = plan_cost(suite, plan, rates, parallel=2)
    print("\\n".join(format_plan(plan, cost, rates, "local pool of 2 workers")))

The gradient updates per second of each model size come from ``benchmarks/throughput.py`` run on
this machine once and cached in ``$XDG_CACHE_HOME/dreamer_tf/throughput.json`` (default
``~/.cache``), keyed by a fingerprint of the hardware (CPU model and cores, the GPUs visible, the
Keras backend). Sizes too slow to measure in a minute are scaled from a measured size by the ratios
of the built-in profile (``cost`` in suites.yaml); env steps per second and PPO come from that
profile. Each number in the plan says which of the three it is: measured, scaled or assumed.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dreamer_tf.harness.suite import Plan, RunSpec, Suite, read_json, write_json

# A size whose built-in rate is below this takes too long to measure (compile plus a few updates).
MEASURABLE_UPDATES_PER_S = 0.2
# The size measured to scale the others from when the plan needs none that can be measured.
ANCHOR_SIZE = "size1m"
MEASURE_TIMEOUT_S = 300.0

Measure = Callable[[str, str, int], dict[str, Any]]


# ------------------------------------------------------------------ hardware and the cache


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs this process sees (``nvidia-smi``), honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(",", 1) for line in result.stdout.splitlines() if "," in line]
    chosen = [d.strip() for d in visible.split(",")] if visible else None
    return [name.strip() for index, name in rows if chosen is None or index.strip() in chosen]


def keras_backend() -> str:
    """The Keras backend runs will use: KERAS_BACKEND, else ~/.keras/keras.json, else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = read_json(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json") or {}
    return str(config.get("backend") or "tensorflow")


def hardware() -> dict[str, Any]:
    """What the throughput depends on: the CPU, its cores, the visible GPUs and the Keras backend."""
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 1, "gpus": gpu_names(), "backend": keras_backend()}


def describe_hardware(hw: dict[str, Any]) -> str:
    gpus = ", ".join(hw["gpus"]) if hw["gpus"] else "no GPU"
    return f"{hw['cpu']}, {hw['cores']} cores, {gpus}, {hw['backend']}"


def fingerprint(hw: dict[str, Any]) -> str:
    """A short key for the hardware: measurements are reused on the same hardware only."""
    return hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:16]


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/dreamer_tf/throughput.json`` (``~/.cache`` without the variable)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dreamer_tf" / "throughput.json"


def measurement_key(size: str, obs: str, threads: int) -> str:
    return f"{size}/{obs}/{threads}t"


class ThroughputCache:
    """Measured updates/s per model size, observation kind and thread count, for one hardware."""

    def __init__(self, path: str | Path, hw: dict[str, Any]) -> None:
        self.path = Path(path)
        self.hardware = hw
        self.key = fingerprint(hw)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = (read_json(self.path) or {}).get(self.key) or {}
        return (entry.get("measurements") or {}).get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        data = read_json(self.path) or {}
        entry = data.setdefault(self.key, {"hardware": self.hardware, "measurements": {}})
        entry.setdefault("measurements", {})[key] = record
        write_json(self.path, data)


def measure_throughput(size: str, obs: str, threads: int) -> dict[str, Any]:
    """Run ``benchmarks/throughput.py`` for one size (a few updates after compiling) in a process of
    ``threads`` threads, as a run of the sweep gets; returns its JSON result."""
    command = [sys.executable, "-m", "dreamer_tf.harness.throughput", "--configs", size, "--json"]
    command += ["--updates", "3", "--seconds", "8", "--policy-steps", "3", "--envs", "1", "--no-flops"]
    command += ["--vector-only"] if obs == "vector" else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env[name] = str(threads)
    env["TF_NUM_INTEROP_THREADS"] = str(max(2, threads // 2))
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=MEASURE_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"throughput.py exited {result.returncode}: {tail}")
    measured = json.loads(lines[-1])
    # What a run spends before its first update (imports, building, compiling): the process's time
    # less the timed updates and policy calls.
    timed = measured["updates_timed"] / measured["updates_per_s"] + 3 / measured["policy_calls_per_s"]
    measured["startup_s"] = round(max(0.0, wall - timed), 1)
    return measured


def _load() -> float | None:
    """The 1-minute load average (``None`` where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# ------------------------------------------------------------------ rates


class Throughput:
    """Updates/s per (model size, observation kind) for the estimate, and where each came from."""

    def __init__(self, suite: Suite, cache: ThroughputCache, threads: int, gpu: bool) -> None:
        self.suite = suite
        self.cache = cache
        self.threads = max(1, int(threads))
        self.profile = "gpu" if gpu else "cpu"
        self.notes: list[str] = []

    def assumed(self, size: str) -> float:
        return float((self.suite.cost.get(self.profile, {}).get("updates_per_s") or {}).get(size, 1.0))

    def measured(self, size: str, obs: str) -> float | None:
        record = self.cache.get(measurement_key(size, obs, self.threads))
        return float(record["updates_per_s"]) if record else None

    def prepare(
        self,
        needed: Iterable[tuple[str, str]],
        measure: bool | None,
        log: Callable[[str], None],
        measure_fn: Measure = measure_throughput,
    ) -> None:
        """Measure the sizes the estimate needs and the cache lacks (``measure=True``: again even if
        cached; ``False``: never, the built-in profile stands in)."""
        needed = sorted(set(needed))
        todo: list[tuple[str, str]] = []
        for obs in sorted({obs for _, obs in needed}):
            sizes = [size for size, o in needed if o == obs]
            measurable = [s for s in sizes if self.assumed(s) >= MEASURABLE_UPDATES_PER_S]
            todo += [(size, obs) for size in (measurable or [ANCHOR_SIZE])]
        missing = [(s, o) for s, o in todo if measure or self.measured(s, o) is None]
        self._note_busy([t for t in todo if t not in missing])
        if not missing:
            return
        if measure is False:
            names = ", ".join(f"{s} ({o})" for s, o in missing)
            self.notes.append(
                f"not measured here ({names}; --no-measure): the built-in '{self.profile}' rates"
            )
            return
        for size, obs in missing:
            log(
                f"[plan] measuring {size} ({obs}) updates/s on this machine with benchmarks/throughput.py, "
                f"{self.threads} thread(s); once, then cached in {self.cache.path} (a minute or two) ..."
            )
            load = _load()  # before: the load of the other processes
            try:
                result = measure_fn(size, obs, self.threads)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as error:
                self.notes.append(f"measuring {size} ({obs}) failed ({error}): the built-in rate stands in")
                log(f"[plan] {self.notes[-1]}")
                continue
            record = {
                "updates_per_s": float(result["updates_per_s"]),
                "load": load,
                "startup_s": result.get("startup_s"),
                "policy_steps_per_s": result.get("policy_steps_per_s"),
                "param_count": result.get("param_count"),
                "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            self.cache.put(measurement_key(size, obs, self.threads), record)
            log(f"[plan] {size} ({obs}): {record['updates_per_s']:.3g} updates/s")
            self._note_busy([(size, obs)])

    def _note_busy(self, measured: Sequence[tuple[str, str]]) -> None:
        # Other processes slow a measurement down and it is cached: say so, so it can be redone.
        cores = int(self.cache.hardware.get("cores") or 1)
        for size, obs in measured:
            record = self.cache.get(measurement_key(size, obs, self.threads)) or {}
            if record.get("load") is not None and float(record["load"]) + self.threads > cores:
                self.notes.append(
                    f"{size} ({obs}) was measured while the machine was busy (load {record['load']:.1f} on "
                    f"{cores} cores): slower than it would be; --measure when it is idle measures again"
                )

    def startup_s(self, size: str, obs: str) -> float | None:
        """Seconds a DreamerV3 run of this size takes to start, if measured here."""
        record = self.cache.get(measurement_key(size, obs, self.threads)) or {}
        return float(record["startup_s"]) if record.get("startup_s") is not None else None

    def updates_per_s(self, size: str, obs: str) -> tuple[float, str]:
        """The rate and its source: ``measured``, ``scaled from <size> (measured)`` or ``assumed``."""
        rate = self.measured(size, obs)
        if rate:
            return rate, "measured"
        anchors = [s for s in self.suite.cost.get(self.profile, {}).get("updates_per_s", {}) if s != size]
        for anchor in sorted(anchors, key=lambda s: abs(math.log(self.assumed(s) / self.assumed(size)))):
            rate = self.measured(anchor, obs)
            if rate:
                return rate * self.assumed(size) / self.assumed(anchor), f"scaled from {anchor} (measured)"
        return self.assumed(size), f"assumed ({self.profile} profile of suites.yaml)"


def needed_sizes(runs: Sequence[RunSpec]) -> set[tuple[str, str]]:
    """The (model size, observation kind) pairs of the DreamerV3 runs that are still to run."""
    return {(spec.size, spec.obs) for spec in runs if spec.agent == "dreamerv3" and spec.state()[0] != "done"}


# ------------------------------------------------------------------ cost of a plan


@dataclasses.dataclass
class DomainCost:
    domain: str
    runs: int = 0
    done: int = 0
    env_steps: float = 0.0
    updates: float = 0.0
    seconds_left: float = 0.0  # run time still to spend, summed over runs
    longest_s: float = 0.0  # the longest single run left
    rates: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class PlanCost:
    domains: dict[str, DomainCost]
    parallel: int

    @property
    def seconds_left(self) -> float:
        return sum(d.seconds_left for d in self.domains.values())

    def wall_s(self, domains: Iterable[str] | None = None) -> float:
        """Wall time with ``parallel`` runs at a time: the work spread over them, but at least the
        longest single run."""
        chosen = [self.domains[d] for d in (domains if domains is not None else self.domains)]
        total = sum(d.seconds_left for d in chosen)
        return max(total / max(self.parallel, 1), max((d.longest_s for d in chosen), default=0.0))


def plan_cost(suite: Suite, plan: Plan, rates: Throughput, parallel: int) -> PlanCost:
    """Per domain: runs, env steps, updates and the run time left on this machine."""
    domains: dict[str, DomainCost] = {}
    for spec in plan.runs:
        cost = domains.setdefault(spec.domain, DomainCost(spec.domain))
        rate, source = rates.updates_per_s(spec.size, spec.obs)
        startup = rates.startup_s(spec.size, spec.obs) if spec.agent == "dreamerv3" else None
        estimate = suite.estimate(spec, rates.profile, updates_per_s=rate, startup_s=startup)
        state, status = spec.state()
        cost.runs += 1
        cost.env_steps += estimate["env_steps"]
        cost.updates += estimate["updates"]
        if spec.agent == "dreamerv3":
            started = f", start-up {startup:.0f} s" if startup is not None else ""
            cost.rates.add(f"{spec.size} {rate:.3g} updates/s, {source}{started}")
        if state == "done":
            cost.done += 1
            continue
        left = estimate["seconds"] * (1.0 - min(1.0, int(status.get("step", 0)) / max(spec.steps, 1)))
        cost.seconds_left += left
        cost.longest_s = max(cost.longest_s, left)
    return PlanCost(domains, parallel)


def human_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    return f"{days:.1f} days" if days < 100 else f"{days:,.0f} days"


def format_plan(plan: Plan, cost: PlanCost, rates: Throughput, executor: str) -> list[str]:
    """The plan: a line per domain, a line per unavailable or left-out domain, the total, the rates."""
    lines = [
        f"Plan: budget '{plan.budget}', outdir {plan.outdir}, {executor}, {cost.parallel} run(s) at a time",
        f"  {'domain':<13} {'runs':>6} {'done':>5} {'env steps':>10} {'updates':>9} {'wall time':>13}  rate",
    ]
    for name, d in cost.domains.items():
        rate = "; ".join(sorted(d.rates)) or "no DreamerV3 run"
        lines.append(
            f"  {name:<13} {d.runs:>6} {d.done:>5} {d.env_steps:>10.3g} {d.updates:>9.3g} "
            f"{human_time(cost.wall_s([name])):>13}  {rate}"
        )
    unavailable: dict[str, tuple[int, str]] = {}
    for spec, reason in plan.unavailable:
        count, _ = unavailable.get(spec.domain, (0, reason))
        unavailable[spec.domain] = (count + 1, reason)
    for name, (count, reason) in unavailable.items():
        lines.append(f"  {name:<13} unavailable here ({count} runs not planned): {reason}")
    if plan.excluded:
        lines.append(f"  not in budget '{plan.budget}': {', '.join(plan.excluded)}")
    runs = sum(d.runs for d in cost.domains.values())
    done = sum(d.done for d in cost.domains.values())
    env_steps = sum(d.env_steps for d in cost.domains.values())
    updates = sum(d.updates for d in cost.domains.values())
    lines.append(
        f"Total: {runs} runs ({done} done), {env_steps:.3g} env steps, {updates:.3g} updates; about "
        f"{human_time(cost.wall_s())} of wall time ({human_time(cost.seconds_left)} of run time)"
    )
    lines.append(
        f"Rates: updates/s for {describe_hardware(rates.cache.hardware)}, {rates.threads} thread(s) per run "
        f"(cache {rates.cache.path}); env steps/s and PPO assumed ('{rates.profile}' profile of suites.yaml)"
    )
    lines += [f"Note: {note}" for note in rates.notes]
    return lines


def fitting_options(
    cost: PlanCost,
    max_hours: float,
    budget: str,
    other_budgets: dict[str, float],
    cpus_per_run: float,
) -> list[str]:
    """Flags that would bring the plan under ``max_hours``: a smaller budget, fewer domains, more
    runs at a time."""
    limit = max_hours * 3600.0
    options = [
        f"--budget {name} (about {human_time(seconds)})"
        for name, seconds in sorted(other_budgets.items(), key=lambda item: item[1])
        if seconds <= limit and name != budget
    ]
    chosen: list[str] = []
    for name in sorted(cost.domains, key=lambda d: cost.wall_s([d])):
        if cost.wall_s([*chosen, name]) <= limit:
            chosen.append(name)
    if chosen and len(chosen) < len(cost.domains):
        options.append(f"--domains {','.join(chosen)} (about {human_time(cost.wall_s(chosen))})")
    longest = max((d.longest_s for d in cost.domains.values()), default=0.0)
    if longest <= limit:
        needed = math.ceil(cost.seconds_left / limit)
        options.append(
            f"--executor ray --address <cluster> with room for {needed} runs at a time "
            f"({needed * cpus_per_run:g} CPUs)"
        )
    else:
        options.append(f"(no number of workers helps: a single run takes about {human_time(longest)})")
    return options
