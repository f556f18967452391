"""Command line: train an agent on a task and write the run folder.

    python -m dreamer_tf --task dmc_walker_walk --configs dmc_proprio size12m \\
        --logdir ~/logdir/walker --run.steps 1e5 --agent dreamerv3
    dreamer-tf --task dummy_disc --agent random --configs debug --run.steps 300

``--configs`` stacks presets from ``dreamer_tf/configs.yaml`` over its
``defaults``; any ``--a.b value`` overrides one key (unknown keys are errors).
Running the same command again with the same ``--logdir`` resumes from the
run's checkpoint. On resume the config is compared with the saved
``config.yaml``: a difference in a key that changes the model or its data
(``task``, ``agent_name``, ``agent.*``, ``ppo.*``, ``replay_context``, the task's
``env.<domain>.*``) is refused, since the checkpoint would not fit or would
silently train a different agent; any other difference (``run.steps``,
``run.log_every``, ...) is allowed, printed, and the new config is saved with
the old one kept as ``config.before-<time>.yaml``.

A run folder has one writer: the CLI locks it (``dreamer_tf.run.lock``) before
reading or writing anything in it, and a second process on the same folder is
refused with the holder's PID and host. A folder that holds records
(``metrics.jsonl`` / ``scores.jsonl`` rows, checkpoint folders) but no
loadable checkpoint is refused too, untouched: starting it afresh would erase them.

Exit codes: 0 done, 2 a problem the user can fix (the message says what),
128 + signal number when stopped by SIGINT / SIGTERM after a final checkpoint, 1 when the run
failed (``status.json`` holds the reason; a failure the loop diagnosed itself, such as a
non-finite reward, is one line on stderr, anything else its traceback).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.config import Config, ConfigError, load_config, validate

AGENTS: dict[str, str] = {
    "dreamerv3": "dreamer_tf.dreamerv3.agent:Agent",
    "random": "dreamer_tf.random_agent:RandomAgent",
    "ppo": "dreamer_tf.ppo.agent:Agent",
}

# Keys whose change makes a checkpoint not fit or the resumed run a different experiment.
MODEL_KEYS = ("task", "agent_name", "agent.", "ppo.", "replay_context")


class AgentUnavailableError(ImportError):
    """The chosen agent's module cannot be imported."""


class ConfigMismatchError(ConfigError):
    """A resumed run was started with a config that changes the model."""


class OrphanRecordsError(RuntimeError):
    """The run folder holds an earlier run's records but no checkpoint to resume them from."""


def check_no_orphan_records(logdir: Path) -> None:
    """Raise ``OrphanRecordsError`` if ``logdir`` holds records that a fresh start would erase.

    Called when no loadable checkpoint was found: a fresh start truncates ``metrics.jsonl`` and
    ``scores.jsonl`` to step 0 and overwrites ``checkpoint/`` at its first save, so a folder with rows
    or with checkpoint folders (e.g. ``latest`` without its manifest) is refused instead.
    """
    from dreamer_tf.run.metrics import METRICS_FILE, SCORES_FILE, read_jsonl

    found = []
    for name in (METRICS_FILE, SCORES_FILE):
        rows = len(read_jsonl(logdir / name))
        if rows:
            found.append(f"{name} with {rows} rows")
    folders = [
        p for p in (logdir / "checkpoint" / "latest", logdir / "checkpoint" / "previous") if p.is_dir()
    ]
    for folder in folders:
        found.append(f"{folder.relative_to(logdir)}/ without its manifest.json")
    if found:
        raise OrphanRecordsError(
            f"{logdir} holds an earlier run's records ({'; '.join(found)}) but no loadable checkpoint, so "
            "resuming would erase them; nothing was changed. Restore the checkpoint, or start over with a "
            "new --logdir (or delete the folder)."
        )


def resolve_agent(name: str) -> Any:
    """The agent class registered as ``name`` in ``AGENTS``, imported on first use."""
    if name not in AGENTS:
        raise ConfigError(f"Unknown agent '{name}'. Choose one of: {', '.join(AGENTS)}.")
    from dreamer_tf.lean_imports import without_keras_extras
    from dreamer_tf.run.console import framework_noise_filtered

    module_name, class_name = AGENTS[name].split(":")
    try:
        # The agent's module brings Keras with TensorFlow or JAX in.
        with framework_noise_filtered(), without_keras_extras():
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise AgentUnavailableError(
            f"Agent '{name}' is not available: importing {module_name} failed ({error})."
        ) from error
    return getattr(module, class_name)


def default_logdir(task: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    return Path("~/logdir/dreamer_tf").expanduser() / f"{task}-{stamp}"


def parse_args(argv: list[str] | None) -> Config:
    """Resolve the config from flags: presets, overrides, then task / agent / logdir."""
    parser = argparse.ArgumentParser(
        prog="dreamer-tf",
        description="Train DreamerV3 (or the PPO / random baseline) on a task.",
        epilog="Any config key can be overridden as --a.b value, e.g. --run.steps 1e5 --seed 1.",
        allow_abbrev=False,
    )
    parser.add_argument("--task", help="<domain>_<task>, e.g. dmc_walker_walk (default: from the presets)")
    parser.add_argument(
        "--configs", nargs="+", default=[], help="presets from configs.yaml, applied in order"
    )
    parser.add_argument("--logdir", help="run folder; an existing one is resumed")
    parser.add_argument("--agent", help=f"one of {', '.join(AGENTS)} (default: dreamerv3)")
    args, overrides = parser.parse_known_args(argv)
    presets = [name for item in args.configs for name in item.split(",") if name]
    config = load_config(presets, overrides)
    updates: dict[str, Any] = {}
    if args.task:
        updates["task"] = args.task
    if args.agent:
        updates["agent_name"] = args.agent
    if args.logdir:
        updates["logdir"] = args.logdir
    config = config.update(updates) if updates else config
    logdir = Path(config.logdir).expanduser() if config.logdir else default_logdir(config.task)
    return config.update({"logdir": str(logdir.absolute())})


def check_resume_config(config: Config, saved: Config) -> list[str]:
    """Differences between ``saved`` and ``config``; raises for keys in ``MODEL_KEYS``.

    The task's ``env.<domain>`` settings count as model keys too (they shape the observations).
    """
    from dreamer_tf.envs import split_task

    new, old = config.flat(), saved.flat()
    defaults = load_config().flat()
    domain = split_task(config.task)[0]
    model_keys = MODEL_KEYS + (f"env.{domain}.",)
    changes, refused = [], []
    for key in sorted(set(new) | set(old)):
        if key == "logdir" or new.get(key, "<missing>") == old.get(key, "<missing>"):
            continue
        line = f"{key}: {old.get(key, '<missing>')!r} -> {new.get(key, '<missing>')!r}"
        if key not in old and key in defaults and new[key] == defaults[key]:
            # A key added to the defaults after the run began, at its default: the run's behaviour.
            changes.append(line + " (added to the defaults since)")
        elif key in model_keys or key.startswith(tuple(k for k in model_keys if k.endswith("."))):
            refused.append(line)
        else:
            changes.append(line)
    if refused:
        raise ConfigMismatchError(
            f"{config.logdir} holds a checkpoint trained with a different model config:\n  "
            + "\n  ".join(refused)
            + "\nRerun with the original flags (see its config.yaml) or choose a new --logdir."
        )
    return changes


def prepare_logdir(logdir: Path) -> None:
    """Create the run folder (if new) and make sure files can be written in it.

    Raises ``ConfigError`` with one line when ``logdir`` or a parent is a file, or the folder cannot be
    created or written: found now, before any environment or agent starts, not at the first save.
    """
    existing = next((p for p in (logdir, *logdir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        if existing == logdir:
            raise ConfigError(f"--logdir {logdir} is a file, not a folder.")
        raise ConfigError(f"--logdir {logdir} is inside {existing}, which is a file, not a folder.")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the run folder {logdir}: {error.strerror or error}.") from None
    probe = logdir / f".write-test-{os.getpid()}"
    try:
        # os.access is not enough: it says yes to root on a read-only file system.
        with open(probe, "x"):
            pass
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"Cannot write in the run folder {logdir}: {error.strerror or error}. Choose another --logdir "
            "or make it writable."
        ) from None


def save_config(config: Config, logdir: Path, resuming: bool) -> None:
    path = logdir / "config.yaml"
    if resuming and path.exists():
        changes = check_resume_config(config, Config.load(path))
        if changes:
            print("Resuming with changed settings:\n  " + "\n  ".join(changes), file=sys.stderr)
            stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
            path.rename(logdir / f"config.before-{stamp}.yaml")
    try:
        config.save(path)
    except OSError as error:
        raise ConfigError(f"Cannot write {path}: {error.strerror or error}.") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "keras" in sys.modules:
        # Only when the agent brought Keras in: the random agent must not pay for importing it.
        from dreamer_tf import backend
        from dreamer_tf.run.console import framework_noise_filtered

        with framework_noise_filtered():  # on TensorFlow, Keras seeds it too
            backend.set_seed(seed)


def _make_env(task: str, config: Config, seed: int) -> Any:
    from dreamer_tf import envs

    return envs.make(task, config.update({"seed": seed}))


def make_envs(config: Config, mode: str = "train") -> Any:
    """A BatchEnv of ``run.envs`` (``run.eval_envs`` for mode ``eval``) environments of ``config.task``."""
    from dreamer_tf.envs.parallel import BatchEnv

    count = config.run.envs if mode == "train" else config.run.eval_envs
    # Distinct seeds per environment; evaluation environments never share a seed with training ones.
    offset = 0 if mode == "train" else 10_000
    fns = [
        functools.partial(_make_env, config.task, config, config.seed * 100_003 + offset + i)
        for i in range(count)
    ]
    parallel = config.run.parallel
    if parallel == "auto":
        parallel = "process" if count > 1 else "none"
    return BatchEnv(fns, parallel=parallel, timeout=config.run.episode_timeout)


def make_replay(config: Config) -> Any:
    from dreamer_tf.run.replay import Replay

    length = config.batch_length + config.replay_context
    capacity = int(config.replay.size)
    if config.batch_size * length > capacity:
        raise ConfigError(
            f"replay.size {capacity} cannot hold one batch of batch_size {config.batch_size} x "
            f"(batch_length + replay_context) {length} steps."
        )
    return Replay(length, capacity, online=config.replay.online, chunk=config.replay.chunk, seed=config.seed)


def make_logger(config: Config, logdir: str | Path) -> Any:
    from dreamer_tf.envs import split_task
    from dreamer_tf.run.metrics import Logger

    records: list[str] = []
    if split_task(config.task)[0] == "bsuite":
        from dreamer_tf.envs.bsuite import record_files

        records = record_files(config.task, config)  # kept in step with the checkpoints
    return Logger(
        logdir,
        total_steps=config.run.steps,
        progress=config.run.progress,
        records=records,
        loggers=config.run.loggers,
        config=config,
    )


def describe(config: Config) -> str:
    """The settings a user wants to see confirmed when a run starts."""
    from dreamer_tf.run.console import backend_line

    run = config.run
    ratio = run.train_ratio / (config.batch_size * config.batch_length)
    lines = [
        f"Task: {config.task}    Agent: {config.agent_name}    Seed: {config.seed}",
        f"Logdir: {config.logdir}",
        f"Env steps: {run.steps:.4g} in {run.envs} envs ({run.parallel})",
    ]
    if config.agent_name == "ppo":
        ppo = config.ppo
        lines += [
            f"PPO: rollouts of {ppo.rollout_length} x {run.envs} steps, {ppo.epochs} epochs of "
            f"{ppo.minibatches} minibatches, lr {ppo.lr:g}    Precision: {config.compile.precision}",
            f"Backend: {backend_line()}",
        ]
        return "\n".join(lines)
    lines += [
        f"Batch: {config.batch_size} x {config.batch_length} (+{config.replay_context} context)",
        f"Train ratio: {run.train_ratio:g} ({ratio:.4g} updates per env step)",
        f"Replay: {config.replay.size:.4g} steps    Precision: {config.compile.precision}",
        f"Backend: {backend_line()}",
    ]
    if config.agent_name == "dreamerv3":
        dyn = config.agent.dyn
        lines.append(f"Model: deter {dyn.deter}, hidden {dyn.hidden}, classes {dyn.classes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dreamer_tf`` and the ``dreamer-tf`` script."""
    from dreamer_tf.envs import UnknownTaskError, check_task
    from dreamer_tf.run.checkpoint import Checkpoint
    from dreamer_tf.run.console import quiet_framework_logs
    from dreamer_tf.run.lock import RunLock, RunLockedError
    from dreamer_tf.run.trackers import MissingTrackerError, check_packages, parse_loggers

    quiet_framework_logs()  # before the agent's module brings TensorFlow in
    lock = None
    try:
        config = parse_args(argv)
        # Every mistake in the user's input fails here, before a worker starts or a run folder exists.
        validate(config)
        check_task(config.task)
        check_packages(parse_loggers(config.run.loggers))
        agent_class = resolve_agent(config.agent_name)
        logdir = Path(config.logdir)
        prepare_logdir(logdir)
        # Taken before anything in the folder is read for resuming, written or truncated.
        lock = RunLock(logdir)
        lock.acquire()
        resuming = Checkpoint(logdir / "checkpoint").exists()
        if not resuming:
            check_no_orphan_records(logdir)
        save_config(config, logdir, resuming)
    except (
        ConfigError,
        UnknownTaskError,
        AgentUnavailableError,
        RunLockedError,
        OrphanRecordsError,
        MissingTrackerError,
    ) as error:
        if lock is not None:
            lock.release()
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return _train(config, logdir, agent_class, resuming)
    finally:
        lock.release()


def _train(config: Config, logdir: Path, agent_class: Any, resuming: bool) -> int:
    from dreamer_tf.envs.wrappers import MissingPackageError
    from dreamer_tf.run import loop
    from dreamer_tf.run.checkpoint import CheckpointError

    if "keras" in sys.modules:  # the random agent runs without Keras
        from dreamer_tf import backend

        backend.prepare_process(config.compile.cache)  # first: describe() below starts JAX and its threads
    print(describe(config), file=sys.stderr)
    if resuming:
        print("Found a checkpoint: resuming.", file=sys.stderr)
    seed_everything(config.seed)

    def make_agent(obs_space: dict, act_space: dict, config: Config) -> Any:
        agent = agent_class(obs_space, act_space, config)
        if "keras" in sys.modules:
            from dreamer_tf import backend

            backend.release_build_memory()
        return agent

    from dreamer_tf.run.console import summary

    start = time.monotonic()
    try:
        status = loop.train(make_agent, make_replay, make_envs, make_logger, config, logdir)
    except (CheckpointError, ConfigError, MissingPackageError) as error:
        # status.json already records the failure; the user needs the message, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except loop.RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary(logdir, status, time.monotonic() - start), file=sys.stderr)
    if status == "interrupted":
        record = loop.read_status(logdir) or {}
        signame = record.get("signal", "SIGINT")
        import signal

        return 128 + int(getattr(signal, signame, signal.SIGINT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
