"""Behaviour Suite (Osband et al. 2020): 23 experiments, 468 configurations by bsuite id.

Tasks are bsuite ids: ``bsuite_catch/0``, ``bsuite_deep_sea/21``; a bare experiment
(``bsuite_catch``) means its configuration 0. Every episode is recorded with bsuite's
own CSV logger, so bsuite's analysis (``bsuite.logging.csv_load`` and
``bsuite.experiments.summary_analysis``) scores a run by capability. The results go to
``config.env.bsuite.logdir``, or else ``<config.logdir>/bsuite``, or else
``~/logdir/dreamer_tf/bsuite``.

The CSV has the columns and the logarithmic row spacing of ``bsuite.load_and_record_to_csv``,
with two differences that make it usable from a training run. A resumed run continues the
existing CSV: bsuite's running counters (steps, episodes, total return and the experiment's own,
e.g. catch's ``total_regret``) are restored from ``<csv>.counters.json``, written after every
episode since the rows are logarithmically spaced (``overwrite: true`` starts afresh instead). A
training run keeps both files in its checkpoint (``record_files``) and puts them back on resume, so
episodes after the checkpoint, which the resumed run does not continue, leave no trace in them. And only one environment per bsuite id records: with several environments
(``run.envs`` > 1, in this process or in workers) the first claims the CSV through a lock file
holding its process id and the others run unrecorded, since bsuite's analysis reads one agent's
stream of episodes. Each configuration prescribes its number of episodes
(``bsuite_num_episodes``); the environment keeps running after that, and ``finished`` tells the
loop it may stop.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env
from dreamer_tf.envs.wrappers import FromDM, Wrapper, require, standardize

INSTALL = "pip install bsuite==0.3.6"
# bsuite's running counters after the last episode, beside the CSV (``<csv>.counters.json``).
COUNTERS_SUFFIX = ".counters.json"

# Number of configurations of each experiment in bsuite.sweep (468 in all).
EXPERIMENTS = {
    "bandit": 20, "bandit_noise": 20, "bandit_scale": 20, "cartpole": 20, "cartpole_noise": 20,
    "cartpole_scale": 20, "cartpole_swingup": 20, "catch": 20, "catch_noise": 20, "catch_scale": 20,
    "deep_sea": 21, "deep_sea_stochastic": 21, "discounting_chain": 20, "memory_len": 23,
    "memory_size": 17, "mnist": 20, "mnist_noise": 20, "mnist_scale": 20, "mountain_car": 20,
    "mountain_car_noise": 20, "mountain_car_scale": 20, "umbrella_distract": 23, "umbrella_length": 23,
}  # fmt: skip


def all_ids() -> list[str]:
    """Every bsuite id, from ``bsuite.sweep`` when installed, else from the table above."""
    try:
        require("bsuite", "bsuite", INSTALL)
        from bsuite import sweep

        return list(sweep.SWEEP)
    except ImportError:
        return [f"{name}/{index}" for name, count in EXPERIMENTS.items() for index in range(count)]


def check(task: str) -> None:
    """Raise ``ValueError`` if ``task`` is not a bsuite id (``dreamer_tf.envs.check_task``)."""
    ids = all_ids()
    if task not in ids:
        experiment = task.split("/")[0]
        same = [i for i in ids if i.split("/")[0] == experiment]
        if same:
            known = f"{experiment} has the ids {same[0]} to {same[-1]}"
        else:
            known = "list the ids with: python -m dreamer_tf.envs --domain bsuite"
        raise ValueError(f"bsuite has no id '{task}' ({known}).")


def results_dir(config: Any) -> str:
    """Where the CSV files go (see the module docstring)."""
    settings = config.env.bsuite
    if settings.get("logdir"):
        return os.path.expanduser(str(settings.logdir))
    if config.get("logdir"):
        return os.path.join(os.path.expanduser(str(config.logdir)), "bsuite")
    return os.path.expanduser(os.path.join("~", "logdir", "dreamer_tf", "bsuite"))


class BSuite(Wrapper):
    """One bsuite configuration, recorded to ``directory`` in bsuite's CSV format."""

    def __init__(
        self, bsuite_id: str, directory: str | None, overwrite: bool = False, seed: int | None = None
    ) -> None:
        if "/" not in bsuite_id:
            bsuite_id = f"{bsuite_id}/0"
        require("bsuite", "bsuite", INSTALL)
        from bsuite import sweep

        if bsuite_id not in sweep.SETTINGS:
            experiment = bsuite_id.split("/")[0]
            count = EXPERIMENTS.get(experiment)
            valid = f"0..{count - 1}" if count else f"experiments: {', '.join(EXPERIMENTS)}"
            raise ValueError(f"Unknown bsuite id '{bsuite_id}' ({valid}).")
        dmenv = _load(bsuite_id, seed)
        self.recorder: CsvRecorder | None = None
        if directory:
            self.recorder = CsvRecorder.claim(bsuite_id, directory, overwrite)
        if self.recorder:
            from bsuite.utils import wrappers

            dmenv = wrappers.Logging(dmenv, self.recorder)
            self.recorder.resume(dmenv)
        self.dm_env = dmenv  # the bsuite environment, wrapped by bsuite's Logging when recording
        self.bsuite_id = bsuite_id
        self.directory = directory
        self.num_episodes = self.recorder.episodes if self.recorder else 0
        self.max_episodes = int(_unwrap(dmenv).bsuite_num_episodes)
        # Observations such as catch's (10, 5) board are flattened to vectors for the MLP encoder.
        super().__init__(FromDM(dmenv, flatten=True))

    @property
    def finished(self) -> bool:
        """Whether the configuration's prescribed number of episodes has been run."""
        return self.num_episodes >= self.max_episodes

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        obs = self.env.step(action)
        if obs["is_last"]:
            self.num_episodes += 1
            if self.recorder:
                self.recorder.note(self.dm_env)
        return obs

    def close(self) -> None:
        if self.recorder:
            self.recorder.release()
        super().close()


class CsvRecorder:
    """bsuite's CSV format for one bsuite id, written atomically, resumable, one writer at a time.

    Plays the role of ``bsuite.logging.csv_logging.Logger`` under bsuite's ``Logging`` wrapper.
    """

    _claimed: set[str] = set()  # CSV paths recorded by this process

    def __init__(self, path: str, rows: list[dict[str, Any]], counters: dict[str, Any] | None = None) -> None:
        self.path = path
        self.rows = rows
        # bsuite's running counters after the last episode; its rows are logarithmically spaced, so
        # the last row is usually older than the last episode.
        self.counters = counters if counters is not None else (dict(rows[-1]) if rows else None)

    @classmethod
    def claim(cls, bsuite_id: str, directory: str, overwrite: bool) -> CsvRecorder | None:
        """The recorder for ``bsuite_id`` in ``directory``, or None if another environment has it."""
        os.makedirs(directory, exist_ok=True)
        path = csv_path(bsuite_id, directory)
        if path in cls._claimed or not _take_lock(path + ".lock"):
            return None
        cls._claimed.add(path)
        rows, counters = [], None
        if not overwrite:
            if os.path.exists(path):
                with open(path, newline="") as file:
                    rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(file)]
            with contextlib.suppress(FileNotFoundError):
                with open(path + COUNTERS_SUFFIX) as file:
                    counters = json.load(file)
            if counters is not None and rows and int(counters["episode"]) < int(rows[-1]["episode"]):
                counters = None  # older than the CSV (written by a version without it): trust the rows
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + COUNTERS_SUFFIX)
        return cls(path, rows, counters)

    @property
    def episodes(self) -> int:
        return int(self.counters["episode"]) if self.counters else 0

    def note(self, logging_env: Any) -> None:
        """Record bsuite's running counters at the end of an episode (beside the CSV, atomically)."""
        counters = {
            "steps": logging_env._steps,
            "episode": logging_env._episode,
            "total_return": float(logging_env._total_return),
            **{k: _plain(v) for k, v in logging_env.bsuite_info().items()},
        }
        self.counters = counters
        tmp = f"{self.path}{COUNTERS_SUFFIX}.{os.getpid()}.tmp"
        with open(tmp, "w") as file:
            json.dump(counters, file)
        os.replace(tmp, self.path + COUNTERS_SUFFIX)

    def resume(self, logging_env: Any) -> None:
        """Restore bsuite's running counters after the last episode (nothing to do for a new file)."""
        if not self.counters:
            return
        last = self.counters
        logging_env._steps = int(last["steps"])
        logging_env._episode = int(last["episode"])
        logging_env._total_return = float(last["total_return"])
        core = {"steps", "episode", "total_return", "episode_len", "episode_return"}
        for key in set(last) - core:
            holder = _find_attribute(logging_env, f"_{key}")
            if holder is None:
                raise ValueError(f"Cannot resume {self.path}: the environment has no counter '{key}'.")
            setattr(holder, f"_{key}", type(getattr(holder, f"_{key}"))(last[key]))

    def write(self, data: dict[str, Any]) -> None:
        self.rows.append(dict(data))
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def release(self) -> None:
        self._claimed.discard(self.path)
        with contextlib.suppress(OSError):
            with open(self.path + ".lock") as file:
                if file.read().strip() == str(os.getpid()):
                    os.remove(self.path + ".lock")


def csv_path(bsuite_id: str, directory: str) -> str:
    """The CSV file of ``bsuite_id`` (``catch/0``) in ``directory``, named as bsuite's logger names it."""
    from bsuite.logging import csv_logging

    if "/" not in bsuite_id:
        bsuite_id = f"{bsuite_id}/0"
    name = bsuite_id.replace("/", csv_logging.SAFE_SEPARATOR)
    return os.path.join(directory, f"{csv_logging.BSUITE_PREFIX}{name}.csv")


def record_files(task: str, config: Any) -> list[str]:
    """The files a ``bsuite_<id>`` run writes besides the loop's records: its CSV and its counters.

    A resumed run puts them back as they were at its checkpoint (``dreamer_tf.run.metrics.Logger``).
    """
    directory = results_dir(config)
    path = csv_path(task.split("_", 1)[1], directory)
    return [path, path + COUNTERS_SUFFIX]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _take_lock(path: str) -> bool:
    """Create ``path`` holding our pid; a lock left by a dead process is taken over."""
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as file:
                    owner = int(file.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                return False
            with contextlib.suppress(OSError):
                os.remove(path)  # stale: its process is gone
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(str(os.getpid()))
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _find_attribute(env: Any, name: str) -> Any:
    while env is not None:
        if name in vars(env):
            return env
        env = vars(env).get("_env")
    return None


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _load(bsuite_id: str, seed: int | None) -> Any:
    """The environment of ``bsuite_id``, its random draws seeded by ``seed`` where bsuite leaves them open.

    Many ids (catch, cartpole, mountain_car, mnist, ...) set ``seed: None``, which seeds from the
    operating system: a run could not be repeated. Seeds an id fixes, and ``mapping_seed`` (which
    defines the problem itself), are kept.
    """
    import inspect

    from bsuite import bsuite as registry
    from bsuite import sweep

    experiment = bsuite_id.split("/")[0]
    kwargs = dict(sweep.SETTINGS[bsuite_id])
    parameter = inspect.signature(registry.EXPERIMENT_NAME_TO_ENVIRONMENT[experiment]).parameters.get("seed")
    if seed is not None and parameter is not None:
        if kwargs.get("seed", parameter.default) is None:
            kwargs["seed"] = int(seed)
    return registry.load(experiment, kwargs)


def _unwrap(env: Any) -> Any:
    while not hasattr(env, "bsuite_num_episodes") and hasattr(env, "_env"):
        env = env._env
    return env


def make(task: str, config: Any) -> Env:
    """``bsuite_<id>``, e.g. ``bsuite_catch/0``, with ``config.env.bsuite``."""
    settings = config.env.bsuite
    overwrite = bool(settings.get("overwrite", False))
    return standardize(
        BSuite(task, results_dir(config), overwrite=overwrite, seed=getattr(config, "seed", None))
    )
