"""The benchmark suite: which runs a sweep makes, where they live, and what state each is in.

    suite = Suite.load("dreamer_tf/harness/suites.yaml")
    plan = suite.plan(outdir="runs", budget="smoke", agents=["dreamerv3", "ppo"])
    for run in plan.runs:          # RunSpec: one `python -m dreamer_tf` process each
        print(run.run_id, run.state(), " ".join(run.command()))
    for run, reason in plan.unavailable:   # domains whose package is missing here
        print(run.run_id, reason)

A run's folder is ``<outdir>/<domain>/<task>/<agent>[-<ablation>]/seed<k>`` (a ``/`` in a bsuite
id becomes ``-``). Besides the CLI's files it holds ``run.json`` (the spec, written by the suite)
and ``train.log`` (the process output of every attempt). The sweep's record is
``<outdir>/suite.json``: every planned run with its state and error, unavailable ones included.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import fnmatch
import functools
import importlib
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dreamer_tf.config import (
    ConfigError,
    describe_yaml_error,
    load_config,
    read_presets,
    validate,
    yaml_load,
)
from dreamer_tf.run.lock import Holder, lock_holder

SUITES_PATH = Path(__file__).with_name("suites.yaml")
RUN_FILE = "run.json"
LOG_FILE = "train.log"
SUMMARY_FILE = "suite.json"
STATUS_FILE = "status.json"

# States of a run as the suite sees it. `done`, `failed`, `interrupted` come from status.json;
# `pending` has not run (or must resume); `unavailable` cannot run on this machine.
FINAL_STATES = ("done", "failed", "interrupted", "unavailable")


class SuiteError(ValueError):
    """A suites.yaml entry or a command-line selection the user can fix."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the suite: a task, an agent (maybe ablated), a seed and a budget."""

    domain: str
    task: str
    agent: str
    seed: int
    steps: int
    budget: str
    presets: tuple[str, ...]
    flags: tuple[tuple[str, str], ...]
    logdir: str
    ablation: str = ""
    cpus: float = 1.0
    gpus: float = 0.0
    size: str = "size200m"  # model size for the cost estimate
    obs: str = "image"  # what the agent sees, for the cost estimate: image | vector
    runs: str = ""  # the agent it trains (``--agent``) where the suite's agent name differs: ppo_acme -> ppo

    @property
    def variant(self) -> str:
        """``dreamerv3``, ``ppo`` or ``dreamerv3-abl_no_symlog``: the folder under the task."""
        return f"{self.agent}-{self.ablation}" if self.ablation else self.agent

    @property
    def trains(self) -> str:
        """The agent class it trains: ``dreamerv3`` or ``ppo`` (also for a second PPO configuration)."""
        return self.runs or self.agent

    @property
    def run_id(self) -> str:
        """The run's folder relative to the sweep's outdir; unique within a sweep."""
        return f"{self.domain}/{task_dirname(self.task)}/{self.variant}/seed{self.seed}"

    def command(self, python: str | None = None) -> list[str]:
        """The training command: ``python -m dreamer_tf ...`` with this run's settings."""
        command = [python or sys.executable, "-m", "dreamer_tf.run.train", "--task", self.task]
        command += ["--agent", self.trains, "--configs", *self.presets, "--logdir", self.logdir]
        command += ["--seed", str(self.seed), "--run.steps", str(self.steps)]
        for key, value in self.flags:
            command += [f"--{key}", value]
        return command

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["presets"] = list(self.presets)
        out["flags"] = dict(self.flags)
        out["run_id"] = self.run_id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["presets"] = tuple(values.get("presets", ()))
        values["flags"] = tuple((str(k), str(v)) for k, v in dict(values.get("flags", {})).items())
        return cls(**values)

    def state(self) -> tuple[str, dict[str, Any]]:
        """``(state, status record)``: what a sweep should do with this run now.

        ``done`` (reached its steps; skipped), ``running`` (a live process, here or on another host,
        holds its folder: skipped; the record's ``holder`` names it), or ``pending`` (new,
        interrupted, failed or short of steps: started, resuming its checkpoint).
        """
        status = read_json(Path(self.logdir) / STATUS_FILE) or {}
        if status.get("status") == "done" and int(status.get("step", 0)) >= self.steps:
            return "done", status
        holder = lock_owner(Path(self.logdir))
        if holder is not None:
            return "running", {**status, "holder": holder.describe()}
        return "pending", status


@dataclasses.dataclass
class Plan:
    """The runs of one sweep, and those that cannot run here with the reason."""

    runs: list[RunSpec]
    unavailable: list[tuple[RunSpec, str]]
    outdir: Path
    budget: str
    # Domains of the selection that the budget leaves out (a budget with a `domains` list).
    excluded: list[str] = dataclasses.field(default_factory=list)


class Suite:
    """``dreamer_tf/harness/suites.yaml``: domains, budgets, agents, ablations and the cost model."""

    def __init__(self, data: Mapping[str, Any], path: str | Path | None = None) -> None:
        self.data = dict(data)
        self.path = Path(path) if path else None
        for key in ("agents", "budgets", "domains"):
            if key not in self.data:
                raise SuiteError(f"{path or 'suites.yaml'} has no '{key}' section.")
            if not isinstance(self.data[key], Mapping):
                raise SuiteError(f"{path or 'suites.yaml'}: the '{key}' section must be a mapping of names.")
        self.domains: dict[str, dict[str, Any]] = dict(self.data["domains"])
        self.budgets: dict[str, dict[str, Any]] = dict(self.data["budgets"])
        self.agents: dict[str, dict[str, Any]] = dict(self.data["agents"])
        self.ablations: dict[str, Any] = dict(self.data.get("ablations") or {})
        self.cost: dict[str, Any] = dict(self.data.get("cost") or {})

    def method_label(self, method: str) -> str:
        """The display name of a published method: suites.yaml ``methods.names``, else the label of the
        agent whose curves it is, else the method's own name."""
        names = (self.data.get("methods") or {}).get("names") or {}
        if method in names:
            return str(names[method])
        for spec in self.agents.values():
            if spec.get("published") == method:
                return str(spec.get("label", method))
        return method

    def shown(self, agents: Iterable[str]) -> Suite:
        """This suite with only the agents a report shows: every agent not marked ``optional``, and
        the optional ones among ``agents`` (those that have runs)."""
        present = set(agents)
        view = copy.copy(self)
        view.agents = {
            name: spec for name, spec in self.agents.items() if not spec.get("optional") or name in present
        }
        return view

    @classmethod
    def load(cls, path: str | Path = SUITES_PATH) -> Suite:
        path = Path(path)
        if not path.exists():
            raise SuiteError(f"No suite file at {path}.")
        try:
            data = yaml_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise SuiteError(f"{path} is not valid YAML ({describe_yaml_error(error)}).") from None
        if not isinstance(data, Mapping):
            what = "empty" if data is None else f"a {type(data).__name__}, not a mapping of sections"
            raise SuiteError(f"{path} is not a suite file: it is {what}.")
        return cls(data, path)

    # ------------------------------------------------------------ tasks and budgets

    def tasks(self, domain: str, which: str = "all") -> list[str]:
        """The domain's tasks (``which="smoke"``: its smoke tasks), patterns expanded over the catalog."""
        entry = self.domain(domain)
        names = entry.get("smoke_tasks" if which == "smoke" else "tasks") or []
        return expand_tasks(domain, names)

    def domain(self, name: str) -> dict[str, Any]:
        if name not in self.domains:
            raise SuiteError(_unknown("domain", name, self.domains))
        return self.domains[name]

    def budget(self, name: str) -> dict[str, Any]:
        if name not in self.budgets:
            raise SuiteError(_unknown("budget", name, self.budgets))
        spec = self.budgets[name] or {}
        if spec.get("seeds") is not None:
            # A budget's seed count used to replace the domains' and so could run more jobs than the paper.
            raise SuiteError(
                f"budget '{name}' sets 'seeds'; budgets keep each domain's seeds: use 'max_seeds: N' "
                "to run at most N of them."
            )
        for domain in spec.get("domains") or {}:
            if domain not in self.domains:
                raise SuiteError(f"budget '{name}': {_unknown('domain', domain, self.domains)}")
        return spec

    def budget_domain(self, budget: str, domain: str) -> dict[str, Any] | None:
        """The budget's settings for ``domain`` (``{}`` if it has none); ``None`` if it leaves it out.

        A budget without a ``domains`` section covers every domain.
        """
        listed = self.budget(budget).get("domains")
        if listed is None:
            return {}
        return dict(listed[domain] or {}) if domain in listed else None

    def steps(self, domain: str, task: str, budget: str) -> int:
        """Env steps of one run of ``task`` under ``budget``."""
        spec = self.budget(budget)
        own = self.budget_domain(budget, domain) or {}
        if own.get("steps") is not None:
            return int(float(own["steps"]))
        if spec.get("steps") is not None:
            return int(float(spec["steps"]))
        entry = self.domain(domain)
        base = entry["steps"]
        if base == "episodes":
            base = bsuite_steps(task, entry.get("episode_steps") or {})
        return max(1, int(round(float(base) * float(spec.get("scale", 1.0)))))

    def ablation_presets(self, chosen: Sequence[str] | None = None) -> list[str]:
        """The ``abl_*`` presets of dreamer_tf/configs.yaml, or the chosen ones (checked)."""
        known = [name for name in read_presets() if name.startswith("abl_")]
        if not chosen:
            configured = self.ablations.get("presets", "all")
            chosen = known if configured in ("all", None) else list(configured)
        for name in chosen:
            if name not in known:
                raise SuiteError(_unknown("ablation preset", name, known))
        return list(chosen)

    # ------------------------------------------------------------ planning

    def plan(
        self,
        outdir: str | Path,
        budget: str = "short",
        domains: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        agents: Sequence[str] = ("dreamerv3", "ppo"),
        seeds: Sequence[int] | None = None,
        ablations: Sequence[str] | None = None,
        main: bool = True,
        extra_presets: Sequence[str] = (),
        overrides: Mapping[str, str] | None = None,
        steps: int | None = None,
        cpus: float | None = None,
        gpus: float | None = None,
        check_available: bool = True,
    ) -> Plan:
        """The runs of a sweep.

        ``domains`` (default: all) and ``tasks`` (names or patterns, optionally ``domain:task``)
        select the tasks; the budget's ``tasks: smoke`` picks each domain's smoke tasks unless
        ``tasks`` are given. ``ablations`` (a list of ``abl_*`` presets, or ``[]`` for none) adds
        DreamerV3 runs with each on the ablation tasks, plus the unablated DreamerV3 on those tasks;
        ``main=False`` plans the ablation runs only. A budget with a ``domains`` section runs only
        those domains, with their own tasks, steps and flags; the others are ``Plan.excluded``.
        Each domain runs its own seeds (at most the budget's ``max_seeds``) unless ``seeds`` is given.
        """
        budget_spec = self.budget(budget)
        outdir = Path(outdir).expanduser().absolute()
        for agent in agents:
            if agent not in self.agents:
                raise SuiteError(_unknown("agent", agent, self.agents))
        for name in domains or ():
            self.domain(name)
        selected = self._select_tasks(
            domains, tasks, smoke=budget_spec.get("tasks") == "smoke", budget=budget
        )
        excluded = [d for d in dict.fromkeys(d for d, _ in selected) if self.budget_domain(budget, d) is None]
        if not tasks:
            excluded = [d for d in (domains or self.domains) if self.budget_domain(budget, d) is None]
        selected = [(d, t) for d, t in selected if d not in excluded]
        runs: dict[str, RunSpec] = {}

        def add(domain: str, task: str, agent: str, seed: int, ablation: str = "") -> None:
            spec = self._spec(
                domain,
                task,
                agent,
                seed,
                budget,
                ablation,
                outdir,
                extra_presets,
                overrides,
                steps,
                cpus,
                gpus,
            )
            runs.setdefault(spec.run_id, spec)

        if main:
            for domain, task in selected:
                for seed in self._seeds(domain, budget, seeds):
                    for agent in agents:
                        add(domain, task, agent, seed)
        if ablations:
            presets = self.ablation_presets(ablations)
            if tasks:
                ablation_tasks = selected
            else:
                key = "smoke_tasks" if budget_spec.get("tasks") == "smoke" else "tasks"
                configured = self.ablations.get(key) or {}
                ablation_tasks = [
                    (domain, task)
                    for domain, names in configured.items()
                    if not domains or domain in domains
                    for task in expand_tasks(domain, names)
                ]
            default_seeds = self.ablations.get("seeds")
            for domain, task in ablation_tasks:
                if self.budget_domain(budget, domain) is None:
                    continue
                if seeds is not None:
                    seed_list = list(seeds)
                else:
                    count = int(default_seeds or 1)
                    if budget_spec.get("max_seeds") is not None:
                        count = min(count, int(budget_spec["max_seeds"]))
                    seed_list = list(range(count))
                for seed in seed_list:
                    add(domain, task, "dreamerv3", seed)
                    for preset in presets:
                        add(domain, task, "dreamerv3", seed, preset)
        planned, unavailable = [], []
        status_cache: dict[str, tuple[bool, str]] = {}
        for spec in runs.values():
            if check_available:
                if spec.domain not in status_cache:
                    status_cache[spec.domain] = domain_available(spec.domain)
                available, reason = status_cache[spec.domain]
                if not available:
                    unavailable.append((spec, reason))
                    continue
            planned.append(spec)
        _validate_runs(planned)
        return Plan(planned, unavailable, outdir, budget, excluded)

    def _select_tasks(
        self, domains: Sequence[str] | None, tasks: Sequence[str] | None, smoke: bool, budget: str
    ) -> list[tuple[str, str]]:
        names = list(domains) if domains else list(self.domains)
        if not tasks:
            selected = []
            for d in names:
                own = self.budget_domain(budget, d)
                if own is None:
                    continue  # left out by the budget
                if own.get("tasks"):
                    selected += [(d, t) for t in expand_tasks(d, own["tasks"])]
                else:
                    selected += [(d, t) for t in self.tasks(d, "smoke" if smoke else "all")]
            return selected
        selected: list[tuple[str, str]] = []
        for item in tasks:
            pin, pattern = item.split(":", 1) if ":" in item else (None, item)
            if pin is not None:
                self.domain(pin)
            matches = [
                (d, t)
                for d in ([pin] if pin else names)
                for t in self.tasks(d)
                if fnmatch.fnmatchcase(t, pattern)
            ]
            if not matches:
                raise SuiteError(
                    f"Task '{item}' is in none of the domains {', '.join([pin] if pin else names)}. "
                    "See dreamer_tf/harness/suites.yaml or `python -m dreamer_tf.envs --domain <domain>`."
                )
            selected += [m for m in matches if m not in selected]
        return selected

    def _seeds(self, domain: str, budget: str, seeds: Sequence[int] | None) -> list[int]:
        """The seeds of a domain's runs: the paper's count (the domain's), at most the budget's ``max_seeds``."""
        if seeds is not None:
            return list(seeds)
        count = int(self.domain(domain).get("seeds", 1))
        cap = self.budget(budget).get("max_seeds")
        if cap is not None:
            count = min(count, int(cap))
        return list(range(count))

    def _spec(
        self,
        domain: str,
        task: str,
        agent: str,
        seed: int,
        budget: str,
        ablation: str,
        outdir: Path,
        extra_presets: Sequence[str],
        overrides: Mapping[str, str] | None,
        steps: int | None,
        cpus: float | None,
        gpus: float | None,
    ) -> RunSpec:
        entry, budget_spec, agent_spec = self.domain(domain), self.budget(budget), self.agents[agent]
        presets = [entry["preset"], *agent_spec.get("presets", []), *budget_spec.get("presets", [])]
        presets += [ablation] if ablation else []
        presets += list(extra_presets)
        flags: dict[str, str] = {}
        if agent_spec.get("train_ratio") and budget_spec.get("domain_train_ratio", True):
            flags["run.train_ratio"] = _number(entry["train_ratio"])
        flags.update({k: _number(v) for k, v in (budget_spec.get("flags") or {}).items()})
        own = self.budget_domain(budget, domain) or {}
        flags.update({k: _number(v) for k, v in (own.get("flags") or {}).items()})
        flags.update({k: str(v) for k, v in (overrides or {}).items()})
        run_steps = int(steps) if steps is not None else self.steps(domain, task, budget)
        resources = budget_spec.get("resources") or {}
        run_gpus = float(gpus if gpus is not None else resources.get("gpus", 0))
        if agent_spec.get("runs", agent) == "dreamerv3" and run_gpus >= 2 and "compile.devices" not in flags:
            # Several GPUs for one run: each update's batch is split over them (compile.devices).
            flags["compile.devices"] = str(int(run_gpus))
        spec = RunSpec(
            domain=domain,
            task=task,
            agent=agent,
            seed=int(seed),
            steps=run_steps,
            budget=budget,
            presets=tuple(presets),
            flags=tuple(flags.items()),
            logdir="",
            ablation=ablation,
            cpus=float(cpus if cpus is not None else resources.get("cpus", 1)),
            gpus=run_gpus,
            size=_model_size(presets, entry.get("size", "size200m")),
            obs=str(entry.get("obs", "image")),
            runs=str(agent_spec.get("runs", "")),
        )
        return dataclasses.replace(spec, logdir=str(outdir / spec.run_id))

    # ------------------------------------------------------------ cost estimate

    def estimate(
        self,
        spec: RunSpec,
        profile: str = "gpu",
        updates_per_s: float | None = None,
        startup_s: float | None = None,
    ) -> dict[str, float]:
        """Env steps, gradient updates and estimated seconds of one run (see suites.yaml cost).

        ``updates_per_s`` and ``startup_s`` (measured on this machine) replace the profile's rate for
        the run's size and ``cost.startup_s``.
        """
        cost = self.cost.get(profile) or {}  # a suite file without a cost section: the defaults below
        ratio = _updates_per_step(spec.presets, spec.flags)
        updates = spec.steps * ratio if spec.trains == "dreamerv3" else 0.0
        # A suite agent's own rate (``ppo_acme_env_steps_per_s``) before its class's.
        keys = ["ppo_env_steps_per_s"] if spec.trains == "ppo" else ["env_steps_per_s"]
        keys = [f"{spec.agent}_env_steps_per_s"] * (spec.agent != spec.trains) + keys
        env_rate = next((cost[key] for key in keys if key in cost), 1000.0)
        if isinstance(env_rate, Mapping):  # per observation kind: PPO's CNN costs far more than its MLP
            env_rate = env_rate[spec.obs]
        update_rate = updates_per_s or (cost.get("updates_per_s") or {}).get(spec.size, 1.0)
        startup = startup_s if startup_s is not None else float(self.cost.get("startup_s", 0))
        seconds = startup + spec.steps / env_rate
        # The training loop around the updates (replay sampling, policy steps, logging, two runs
        # sharing memory bandwidth) makes them slower than the isolated timing of throughput.py.
        seconds += updates / update_rate * float(cost.get("loop_factor", 1.0)) if updates else 0.0
        return {"env_steps": float(spec.steps), "updates": updates, "seconds": seconds}


# ------------------------------------------------------------------ helpers


def task_dirname(task: str) -> str:
    """A task name as one folder name (bsuite ids hold a ``/``)."""
    return task.replace("/", "-")


def expand_tasks(domain: str, names: Iterable[str]) -> list[str]:
    """Task names with shell patterns (``bsuite_catch/*``) expanded over the domain's catalog."""
    out: list[str] = []
    catalog: list[str] | None = None
    for name in names:
        if any(char in name for char in "*?["):
            if catalog is None:
                from dreamer_tf.envs.catalog import tasks as catalog_tasks

                catalog = catalog_tasks(domain)
            matched = [t for t in catalog if fnmatch.fnmatchcase(t, name)]
            if not matched:
                raise SuiteError(f"Pattern '{name}' matches no task of the domain {domain}.")
            out += [t for t in matched if t not in out]
        elif name not in out:
            out.append(name)
    return out


def bsuite_steps(task: str, episode_steps: Mapping[str, Any]) -> int:
    """Env steps for a bsuite id: its experiment's NUM_EPISODES times the longest episode.

    ``episode_steps[experiment]`` is a number or ``{setting: name, plus: k}`` (the episode length is
    that setting of the id, e.g. deep_sea's ``size``).
    """
    bsuite_id = task.split("_", 1)[1] if task.startswith("bsuite_") else task
    experiment = bsuite_id.split("/")[0]
    if experiment not in episode_steps:
        raise SuiteError(f"suites.yaml bsuite.episode_steps has no entry for '{experiment}'.")
    sweep = importlib.import_module(f"bsuite.experiments.{experiment}.sweep")
    length = episode_steps[experiment]
    if isinstance(length, Mapping):
        from bsuite import sweep as all_settings

        settings = all_settings.SETTINGS[bsuite_id if "/" in bsuite_id else f"{bsuite_id}/0"]
        length = int(settings[length["setting"]]) + int(length.get("plus", 0))
    return int(sweep.NUM_EPISODES) * int(length)


def domain_available(domain: str) -> tuple[bool, str]:
    """Whether a suite domain can run here (``dreamer_tf.envs.catalog.domain_status``)."""
    from dreamer_tf.envs.catalog import domain_status

    return domain_status(domain)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON file's content; ``None`` if missing or torn."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: str | Path, data: Any) -> None:
    """Replace a JSON file atomically (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def write_status(logdir: str | Path, status: str, step: int, error: str | None, **extra: Any) -> None:
    """``status.json`` in the CLI's format (dreamer_tf.run.loop.write_status), for runs that died early."""
    record = {
        "status": status,
        "step": int(step),
        "error": error,
        "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    write_json(Path(logdir) / STATUS_FILE, record)


def lock_owner(logdir: Path) -> Holder | None:
    """The live process that holds the run folder (``dreamer_tf.run.lock``), else ``None``.

    A lock left by a process that died (even by SIGKILL) does not count: the run is free.
    """
    return lock_holder(logdir)


def update_summary(
    outdir: str | Path, entries: Mapping[str, Mapping[str, Any]], info: Mapping[str, Any]
) -> Path:
    """Merge run entries into ``<outdir>/suite.json`` (entries of earlier sweeps are kept)."""
    path = Path(outdir) / SUMMARY_FILE
    summary = read_json(path) or {}
    runs = dict(summary.get("runs") or {})
    for run_id, entry in entries.items():
        runs[run_id] = {**runs.get(run_id, {}), **entry}
    summary.update(info)
    summary["updated"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    summary["runs"] = dict(sorted(runs.items()))
    write_json(path, summary)
    return path


def error_headline(error: str | None, limit: int = 300) -> str:
    """The line of an error or traceback that says what went wrong (its last non-empty line)."""
    if not error:
        return ""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _validate_runs(specs: Sequence[RunSpec]) -> None:
    """Raise ``ConfigError`` naming the first run whose config has a value out of range.

    A bad ``--a.b value`` passed to the sweep is found before any run starts, not once per run.
    """
    checked: set[tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = set()
    for spec in specs:
        if (spec.presets, spec.flags) in checked:
            continue
        checked.add((spec.presets, spec.flags))
        try:
            validate(load_config(list(spec.presets), [f"--{k}={v}" for k, v in spec.flags]))
        except ConfigError as error:
            raise ConfigError(f"run {spec.run_id}: {error}") from None


@functools.lru_cache(maxsize=256)
def _updates_per_step(presets: tuple[str, ...], flags: tuple[tuple[str, str], ...]) -> float:
    try:
        config = load_config(list(presets), [f"--{k}={v}" for k, v in flags])
    except ConfigError:
        return 0.0
    return float(config.run.train_ratio) / (config.batch_size * config.batch_length)


def _model_size(presets: Sequence[str], default: str) -> str:
    size = default
    for name in presets:
        if name.startswith("size") or name in ("debug", "small"):
            size = name
    return size


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _unknown(kind: str, name: str, valid: Iterable[str]) -> str:
    import difflib

    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}."
