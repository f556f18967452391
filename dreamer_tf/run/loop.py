"""The training loop: collect with the policy, replay, train at a fixed ratio, log, checkpoint.

It is handed factories and never imports a network, a framework or an
environment (``dreamer_tf.run.train`` builds the factories from the config):

    status = train(
        make_agent=lambda obs_space, act_space, config: RandomAgent(obs_space, act_space, config),
        make_replay=lambda config: Replay(config.batch_length + config.replay_context, 10_000),
        make_envs=lambda config, mode="train": BatchEnv([...]),   # mode "eval" for evaluation
        make_logger=lambda config, logdir: Logger(logdir, config.run.steps),
        config=config,
        logdir="~/logdir/run",
    )                                                              # "done" or "interrupted"

One iteration follows the official driver (``embodied/core/driver.py`` and
``embodied/run/train.py``): step all environments, act on their observations,
store ``obs + action + extra`` per environment in the replay buffer, count one
env step per environment (agent steps, after action repeat), then run the
updates that are due. Updates are paced by the official ``Ratio`` rule: every
env step earns ``train_ratio / (batch_size * batch_length)`` updates, the
fractional rest carries over, and nothing is earned before the replay buffer
holds ``run.train_fill`` steps (0: one batch, ``batch_size * (batch_length +
replay_context)`` steps).

An on-policy agent (``agent.on_policy``, e.g. PPO) gets no replay buffer: every step goes to
``agent.observe`` and ``agent.update`` runs whenever ``agent.ready()``; ``counter/updates``
counts its gradient steps. Its checkpoint holds no replay (nor a partly collected rollout).

The run folder gets ``metrics.jsonl``, ``scores.jsonl`` and TensorBoard events
(through the logger), ``checkpoint/`` and ``status.json``. A run started again
in the same folder resumes from its checkpoint: agent, replay buffer, counters,
the update credit and the RNG states, so the curves continue where they
stopped; the records are rewound to the checkpoint first (``Logger.resume``). A
new run saves a checkpoint at step 0, before its first record, so that a folder
with records always has a checkpoint to resume them from. SIGINT and SIGTERM end
the run after the current iteration with a final checkpoint; a second SIGINT
aborts at once. A signal that arrives while the environments step abandons that
step (a hung environment must not delay the stop), so the checkpoint holds the
state before it.

Faults end the run with ``status.json`` at ``failed`` and its reason, and with a final checkpoint
whenever the state is consistent (between iterations, between updates): an environment that
raises or a worker that dies, a non-finite reward or float observation (refused at the step it
arrives, before replay or training see it: ``NonFiniteError``), and ``run.max_bad_updates`` updates
in a row with a non-finite loss or gradient (the backend skips each such update, so the weights
stay those of the last finite one: ``BadUpdatesError``). A full disk still gets ``failed`` into
``status.json`` where the file can be rewritten in place; temporary files of interrupted writes
are removed when the next run starts in the folder.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.config import ConfigError
from dreamer_tf.run.checkpoint import Checkpoint, process_alive
from dreamer_tf.run.metrics import Aggregator

STATUS_FILE = "status.json"
# Histograms: at most this many action rows are kept between two metric writes (a uniform subsample
# would cost more than it tells), and weights are drawn at most this often (seconds) and at the end.
HISTOGRAM_ACTIONS = 4096
HISTOGRAM_WEIGHTS_EVERY = 600.0
# Frames kept of one recorded episode (per image key); longer episodes are cut, to bound memory.
MAX_VIDEO_FRAMES = 1000
# Replayed sequences shown by an open-loop report.
REPORT_SEQUENCES = 6
# Steps the world model observes before it imagines, in a report (the official report's 5 frames).
REPORT_CONTEXT = 5


class RunFailed(RuntimeError):
    """The run stopped itself for the reason in its message; one line says it all (no traceback)."""


class NonFiniteError(RunFailed):
    """An environment returned a NaN or infinite reward or float observation."""


class BadUpdatesError(RunFailed):
    """Too many updates in a row had a non-finite loss or gradient."""


def train(
    make_agent: Callable[..., Any],
    make_replay: Callable[..., Any],
    make_envs: Callable[..., Any],
    make_logger: Callable[..., Any],
    config: Any,
    logdir: str | Path,
) -> str:
    """Train until ``config.run.steps`` env steps; returns ``"done"`` or ``"interrupted"``.

    Factories are called as ``make_envs(config, mode)`` with mode ``"train"``
    or ``"eval"`` (returns a batch env: ``len``, ``obs_space``, ``act_space``,
    ``step``, ``close``), ``make_agent(obs_space, act_space, config)`` (the
    action space without ``reset``), ``make_replay(config)`` and
    ``make_logger(config, logdir)``. On an exception ``status.json`` records
    ``failed`` with the reason (the traceback, or the message of a ``RunFailed``),
    a final checkpoint is saved if the state is consistent, and the exception
    propagates.
    """
    logdir = Path(logdir).expanduser()
    logdir.mkdir(parents=True, exist_ok=True)
    stop = _StopSignal()
    stop.install()
    run = _Run(make_agent, make_replay, make_envs, make_logger, config, logdir, stop)
    try:
        return run.run()
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            write_status(logdir, "interrupted", run.env_steps, "KeyboardInterrupt (no final checkpoint)")
            raise
        reason = str(error) if isinstance(error, RunFailed) else traceback.format_exc()
        if getattr(error, "__notes__", None):
            # Notes print after the message, but reports show a failure by its last line.
            reason = reason.rstrip() + f"\n{type(error).__name__}: {error}"
        saved = run.save_after_failure(error)
        note = [saved] if saved else []
        write_status(logdir, "failed", run.env_steps, "\n".join(note + [reason.rstrip()]))
        raise
    finally:
        stop.uninstall()
        run.close()


def write_status(logdir: str | Path, status: str, step: int, error: str | None = None, **extra: Any) -> None:
    """Replace ``status.json`` atomically (readers never see half a file)."""
    record = {
        "status": status,
        "step": int(step),
        "error": error,
        "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    path = Path(logdir) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    text = json.dumps(record, indent=1) + "\n"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        # A full disk: rewriting the small file in place reuses the blocks its truncation frees,
        # so a failure still reaches status.json instead of leaving it at "running".
        with open(path, "w") as file:
            file.write(text)


def remove_stale_files(logdir: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted writes left in a run folder; returns them.

    Covers ``status.json``'s and the metrics' temporary files and the checkpoint's ``tmp-*`` folders
    (``Checkpoint.remove_stale``). Only files of processes that are no longer alive are removed.
    """
    logdir = Path(logdir)
    removed = Checkpoint(logdir / "checkpoint").remove_stale()
    for path in logdir.glob(f".{STATUS_FILE}.*.tmp"):
        pid = path.name[len(STATUS_FILE) + 2 : -len(".tmp")]
        if not (pid.isdigit() and process_alive(int(pid))):
            path.unlink(missing_ok=True)
            removed.append(path)
    for path in logdir.glob("*.jsonl.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def read_status(logdir: str | Path) -> dict[str, Any] | None:
    path = Path(logdir) / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else None


class _StepInterrupted(BaseException):
    """Raised by the stop signal's handler inside ``_StopSignal.interruptible``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that an environment's ``except Exception``
    cannot swallow it.
    """


class _StopSignal:
    """Turns SIGINT / SIGTERM into a flag the loop checks between iterations.

    Inside ``interruptible()`` (the environment steps) the handler also raises ``_StepInterrupted``.
    Python runs signal handlers in the main thread between bytecodes and retries interrupted sleeps
    and waits after the handler (PEP 475), so a step hung in ``time.sleep``, a socket read, a Python
    loop, or the wait for a subprocess worker's answer is abandoned at once, while a handler that
    only set the flag would wait for a step that may never return. This is the simplest design that
    keeps every environment where it runs (a thread per step would move in-process environments off
    the thread that made them, which OpenGL contexts and some simulators do not allow). Its limit: a
    native call that never returns to the interpreter is not interrupted; such an environment
    belongs in a subprocess (``--run.parallel process``), whose wait is always interruptible.
    Aborting the step leaves that environment mid-step, which is harmless: the run stops, the
    environments are closed and a resumed run makes new ones.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._interruptible = False

    @contextlib.contextmanager
    def interruptible(self) -> Any:
        """A block that a stop signal aborts with ``_StepInterrupted`` instead of waiting for it."""
        try:
            self._interruptible = True
            yield
        finally:
            self._interruptible = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the save
        self.signum = signum
        _say(
            f"\nReceived {signal.Signals(signum).name}: finishing the iteration and saving a checkpoint "
            "(Ctrl-C again to abort without saving)."
        )
        if self._interruptible:
            self._interruptible = False  # raise once: the cleanup after it runs undisturbed
            raise _StepInterrupted


def _say(message: str) -> None:
    """Print to stderr, ignoring a closed stream: a parent that died and took the pipe with it
    must not turn a clean stop (checkpoint saved) into a failure."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


class _Episodes:
    """Per-environment running score, length and ``log/*`` statistics."""

    def __init__(self, count: int) -> None:
        self.score = np.zeros(count, np.float64)
        self.length = np.zeros(count, np.int64)
        self.logs: list[dict[str, list[float]]] = [{} for _ in range(count)]

    def add(self, index: int, obs: dict[str, np.ndarray]) -> dict[str, Any] | None:
        """Count one step of environment ``index``; return the episode's record if it ended."""
        if obs["is_first"][index]:
            self.score[index], self.length[index] = 0.0, 0
            self.logs[index] = {}
        self.score[index] += float(obs["reward"][index])
        # Like the official logger, length counts observations, the reset one included.
        self.length[index] += 1
        for key, value in obs.items():
            # An image under log/ (DMC's log_image, a rendered frame) is for videos (_Recorder), not a number.
            if key.startswith("log/") and not _is_frame(value[index]):
                self.logs[index].setdefault(key, []).append(float(np.asarray(value[index]).mean()))
        if not obs["is_last"][index]:
            return None
        record: dict[str, Any] = {"score": float(self.score[index]), "length": int(self.length[index])}
        for key, values in self.logs[index].items():
            record[f"{key}/sum"] = float(np.sum(values))
            record[f"{key}/max"] = float(np.max(values))
            record[f"{key}/avg"] = float(np.mean(values))
        return record


def _to_numpy(tree: Any) -> Any:
    """A policy state (nested tuples, lists and dicts of framework tensors) as numpy arrays."""
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree if tree is None else np.asarray(tree)


def _is_frame(value: Any) -> bool:
    """Whether one environment's value is an image frame: uint8 ``[H, W, C]``."""
    value = np.asarray(value)
    return value.dtype == np.uint8 and value.ndim == 3


class _Recorder:
    """Frames of whole episodes of environment 0, one episode when ``due(step)`` says so.

    Every image key of the observations is recorded (the agent's ``image``, a rendered ``log/image``).
    An episode keeps at most ``MAX_VIDEO_FRAMES`` frames per key (the first ones), which bounds memory
    at about 12 MB per 64x64 RGB key.
    """

    def __init__(self) -> None:
        self.frames: dict[str, list[np.ndarray]] | None = None

    def add(self, obs: dict[str, np.ndarray], due: bool) -> dict[str, np.ndarray] | None:
        """Record environment 0's step; returns ``{key: [T, H, W, C]}`` when a recorded episode ends."""
        if obs["is_first"][0]:
            self.frames = {k: [] for k, v in obs.items() if _is_frame(v[0])} if due else None
        if self.frames is None:
            return None
        for key, frames in self.frames.items():
            if len(frames) < MAX_VIDEO_FRAMES:
                frames.append(np.array(obs[key][0]))
        if not obs["is_last"][0]:
            return None
        videos = {k: np.stack(v) for k, v in self.frames.items() if v}
        self.frames = None
        return videos


class _Run:
    def __init__(self, make_agent, make_replay, make_envs, make_logger, config, logdir: Path, stop) -> None:
        self.make_agent, self.make_replay = make_agent, make_replay
        self.make_envs, self.make_logger = make_envs, make_logger
        self.config, self.logdir, self.stop = config, logdir, stop
        run = config.run
        self.total_steps = run.steps
        self.batch_steps = config.batch_size * config.batch_length
        # Updates earned per env step (the official ``Ratio(train_ratio / batch_steps)``).
        self.updates_per_step = float(run.train_ratio) / self.batch_steps
        window = config.batch_size * (config.batch_length + config.replay_context)
        self.train_fill = int(run.train_fill) if run.train_fill > 0 else window
        self.envs = self.eval_envs = self.logger = self.agent = self.replay = None
        # Counters that a checkpoint restores.
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.credit = 0.0  # fractional updates earned but not yet run
        self.training_started = False
        self.last_eval_step: int | None = None
        self.eval_rounds = 0
        # Env steps of the last recorded episode videos (training, evaluation); not checkpointed: a
        # resumed run records its first episodes again.
        self.last_video: dict[str, int | None] = {"train": None, "eval": None}
        self.recorder = _Recorder()
        self.checkpoint = Checkpoint(logdir / "checkpoint")
        self.max_bad_updates = int(run.max_bad_updates)
        if self.max_bad_updates < 1:
            raise ConfigError(f"run.max_bad_updates must be at least 1, got {run.max_bad_updates}.")
        self.bad_updates = 0  # updates skipped in a row for a non-finite loss or gradient
        # Whether a checkpoint written now is one a resume can continue from: false while an
        # iteration's step is half stored or an update half applied.
        self.consistent = False
        self.train_metrics = Aggregator()
        self.episode_metrics = Aggregator()
        self.timers = Aggregator()
        self.histogram_actions: dict[str, list[np.ndarray]] = {}
        self.histogram_returns: list[float] = []
        self.last_weights: float | None = None
        # The training environments' episodes under way: saved with each checkpoint and continued
        # by a resumed run where the environments can save their state (``Env.state``).
        self.live: dict[str, Any] | None = None
        self.saved_episodes: dict[str, Any] | None = None

    # ------------------------------------------------------------ setup and teardown

    def setup(self) -> None:
        config = self.config
        for path in remove_stale_files(self.logdir):
            _say(f"Removed {path}, left by an interrupted write.")
        write_status(self.logdir, "running", 0)
        # The checkpoint is read (and verified) and the records rewound to it before any environment
        # starts, since environments read records of their own (bsuite's CSV) when they are made.
        state = self.checkpoint.load()
        self.logger = self.make_logger(config, self.logdir)
        if state is not None:
            self.logger.resume(int(state["loop"]["env_steps"]), state["loop"].get("records"))
        else:
            self.logger.resume(0)
        self.envs = self.make_envs(config, "train")
        self.obs_space = {k: v for k, v in self.envs.obs_space.items() if not k.startswith("log/")}
        self.act_space = {k: v for k, v in self.envs.act_space.items() if k != "reset"}
        self.agent = self.make_agent(self.obs_space, self.act_space, config)
        self.on_policy = bool(getattr(self.agent, "on_policy", False))
        # An on-policy agent keeps its own rollout: no replay buffer is filled or checkpointed.
        self.replay = None if self.on_policy else self.make_replay(config)
        if state is not None:
            self.checkpoint.load_replay(self.replay)
            self.agent.load(state["agent"])
            self._load_counters(state["loop"])
            self.saved_episodes = state.get("episodes")
            print(
                f"Resumed from {self.checkpoint.latest} at env step {self.env_steps} "
                f"after {self.updates} updates and {self.episodes} episodes.",
                file=sys.stderr,
            )
        else:
            # A checkpoint before the first record: a run killed before its first periodic save
            # resumes from step 0 instead of leaving records without a checkpoint behind.
            self.save()
        write_status(self.logdir, "running", self.env_steps)
        self.consistent = True

    def close(self) -> None:
        for envs in (self.envs, self.eval_envs):
            if envs is not None:
                try:
                    envs.close()
                except Exception as error:  # noqa: BLE001 - a broken worker must not hide the real error
                    print(f"Closing environments failed: {error}", file=sys.stderr)
        self.envs = self.eval_envs = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None

    # ------------------------------------------------------------ checkpoints

    def _counters(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes": self.episodes,
            "credit": self.credit,
            "training_started": self.training_started,
            "last_eval_step": self.last_eval_step,
            "eval_rounds": self.eval_rounds,
            # Libraries (env wrappers, user code) may draw from the global generators.
            "numpy_random": np.random.get_state(),
            "python_random": random.getstate(),
            # Records kept outside metrics.jsonl / scores.jsonl (bsuite's CSV), as of this checkpoint.
            "records": self.logger.snapshot() if hasattr(self.logger, "snapshot") else None,
        }

    def _load_counters(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self.updates = int(state["updates"])
        self.episodes = int(state["episodes"])
        self.credit = float(state["credit"])
        self.training_started = bool(state["training_started"])
        self.last_eval_step = state["last_eval_step"]
        self.eval_rounds = int(state["eval_rounds"])
        np.random.set_state(tuple(state["numpy_random"]))
        version, internal, gauss = state["python_random"]
        random.setstate((version, tuple(internal), gauss))

    def save_after_failure(self, error: BaseException) -> str:
        """Checkpoint the last consistent state after ``error`` ended the run; returns a note for
        ``status.json`` (empty when saved)."""
        if self.logger is None:
            return ""  # it failed while starting: nothing was trained, and any old checkpoint stays
        if not self.consistent:
            return "No final checkpoint: the run failed while its state was half updated."
        self.live = None  # the environments may be what failed: a resumed run starts new episodes
        try:
            self.log(time.monotonic())
            self.save()
        except Exception as save_error:  # noqa: BLE001 - the original failure is what the user must see
            _say(f"Saving the final checkpoint failed: {type(save_error).__name__}: {save_error}")
            return f"No final checkpoint: saving it failed ({type(save_error).__name__}: {save_error})."
        _say(f"Saved a checkpoint at env step {self.env_steps} after the failure.")
        return ""

    def save(self) -> None:
        start = time.perf_counter()
        state = {"agent": self.agent.save(), "loop": self._counters(), "episodes": self._episode_state()}
        self.checkpoint.save(state, replay=self.replay)
        self.timers.add({"checkpoint": time.perf_counter() - start}, agg="sum")
        write_status(self.logdir, "running", self.env_steps)

    def _episode_state(self) -> dict[str, Any] | None:
        """The episodes under way, for a resumed run to continue: every training environment's
        state, the next actions, the policy's recurrent state and the running scores; None where
        an environment cannot save its state (or no episode is under way)."""
        if self.live is None or not hasattr(self.envs, "state"):
            return None
        try:
            states = self.envs.state()
        except Exception as error:  # noqa: BLE001 - the checkpoint matters more than the episodes
            _say(f"The environments' state was not saved ({type(error).__name__}: {error}).")
            return None
        if states is None:
            return None
        episodes = self.live["episodes"]
        return {
            "envs": states,
            "acts": dict(self.live["acts"]),
            "policy": _to_numpy(self.live["policy"]),
            "score": episodes.score.copy(),
            "length": episodes.length.copy(),
            "logs": [{k: np.asarray(v, np.float64) for k, v in logs.items()} for logs in episodes.logs],
        }

    def _continue_episodes(
        self, saved: dict[str, Any], acts: dict[str, np.ndarray], policy_state: Any, episodes: _Episodes
    ) -> tuple[dict[str, np.ndarray], Any]:
        """Restore the saved episodes into the new environments; on any mismatch they start afresh."""
        count = len(self.envs)
        problem = None
        if len(saved["envs"]) != count:
            problem = f"the checkpoint holds {len(saved['envs'])} environments, this run has {count}"
        elif sorted(saved["acts"]) != sorted(acts):
            problem = f"the saved actions have keys {sorted(saved['acts'])}, this run's {sorted(acts)}"
        else:
            try:
                self.envs.load_state(saved["envs"])
            except Exception as error:  # noqa: BLE001 - starting new episodes loses little
                problem = str(error)
        if problem is not None:
            _say(f"Starting new episodes: {problem}.")
            return acts, policy_state
        episodes.score[:] = saved["score"]
        episodes.length[:] = saved["length"]
        episodes.logs = [{k: [float(x) for x in v] for k, v in logs.items()} for logs in saved["logs"]]
        print(f"Continuing the episodes under way in the checkpoint ({count} environments).", file=sys.stderr)
        return {k: np.asarray(v) for k, v in saved["acts"].items()}, saved["policy"]

    # ------------------------------------------------------------ the loop

    def run(self) -> str:
        self.setup()
        run = self.config.run
        if self.env_steps >= self.total_steps:
            print(f"The run already reached {self.env_steps} >= run.steps env steps.", file=sys.stderr)
            if run.eval_every > 0 and self.last_eval_step != self.env_steps:
                # A finished run resumed with evaluation turned on: evaluate its final agent once,
                # and checkpoint the round so that the next resume does not repeat it.
                self.evaluate()
                self.save()
            write_status(self.logdir, "done", self.env_steps)
            return "done"
        count = len(self.envs)
        acts = self._zero_actions(self.act_space, count)
        acts["reset"] = np.ones(count, bool)
        policy_state = self.agent.init_policy(count)
        episodes = _Episodes(count)
        if self.saved_episodes is not None:
            acts, policy_state = self._continue_episodes(self.saved_episodes, acts, policy_state, episodes)
        self.saved_episodes = None
        # What a checkpoint needs to continue the episodes under way (``_episode_state``).
        self.live = {"acts": acts, "policy": policy_state, "episodes": episodes}
        now = time.monotonic()
        self.last_log = self.last_save = self.last_report = now
        self.log_env_steps, self.log_updates = self.env_steps, self.updates
        printed_estimate = False

        while self.env_steps < self.total_steps:
            if self.stop.requested:
                break
            if self._eval_due():
                self.evaluate()
            try:
                with self._timer("env"), self.stop.interruptible():
                    obs = self.envs.step(acts)
            except _StepInterrupted:
                # The step never happened for the loop, but some environments may have taken it:
                # the checkpoint holds no environment state, and a resumed run starts new episodes.
                self.live = None
                break
            except Exception:
                self.live = None
                if self.stop.requested:  # workers killed by the same Ctrl-C: save and leave
                    break
                raise
            logs = {k: v for k, v in obs.items() if k.startswith("log/")}
            obs = {k: v for k, v in obs.items() if not k.startswith("log/")}
            self._check_finite(obs, self.env_steps)
            with self._timer("policy"):
                acts, policy_state, extra = self.agent.policy(obs, policy_state, mode="train")
            # Framework arrays (JAX, TF) become numpy once here, before replay and the envs see them.
            acts = {k: np.asarray(v) for k, v in acts.items()}
            extra = {k: np.asarray(v) for k, v in extra.items()}
            self._check_policy_output(acts, extra, obs, count)
            self._keep_for_histograms(acts)
            if obs["is_last"].any():
                # Actions after the last step are never executed; store zeros like the official driver.
                keep = ~obs["is_last"]
                acts = {
                    k: v * keep.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype) for k, v in acts.items()
                }
            transitions = {**obs, **acts, **extra}
            if not printed_estimate:
                printed_estimate = True
                self._print_memory_estimate({k: v[0] for k, v in transitions.items()})
            self.consistent = False
            if self.on_policy:
                self.agent.observe(transitions)
            else:
                with self._timer("replay_add"):
                    for index in range(count):
                        self.replay.add({k: v[index] for k, v in transitions.items()}, index)
            all_obs = {**obs, **logs}
            for index in range(count):
                # Steps are counted one environment at a time, so every episode gets its own step.
                self.env_steps += 1
                record = episodes.add(index, all_obs)
                if record is not None:
                    self._finish_episode(record)
            self._record(self.recorder, all_obs, "train")
            self.consistent = True
            acts = {**acts, "reset": obs["is_last"].copy()}
            self.live = {"acts": acts, "policy": policy_state, "episodes": episodes}
            self._train(count)
            now = time.monotonic()
            if run.report_every > 0 and now - self.last_report >= run.report_every:
                self.report()
                self.last_report = time.monotonic()
            if now - self.last_log >= run.log_every:
                self.log(now)
            if run.save_every >= 0 and now - self.last_save >= run.save_every:
                self.save()
                self.last_save = time.monotonic()
            self.logger.progress(self.env_steps, *self._rates(time.monotonic()))

        interrupted = self.stop.requested
        if not interrupted and run.eval_every > 0 and self.last_eval_step != self.env_steps:
            self.evaluate()  # the finished run's policy, so that the last point is the final agent
        if not interrupted and run.report_every > 0:
            self.report()
        self.log(time.monotonic(), final=True)
        self.save()
        if interrupted:
            write_status(
                self.logdir, "interrupted", self.env_steps, None, signal=signal.Signals(self.stop.signum).name
            )
            _say(f"Saved a checkpoint at env step {self.env_steps}; rerun to resume.")
            return "interrupted"
        write_status(self.logdir, "done", self.env_steps)
        return "done"

    def _train(self, new_steps: int) -> None:
        if self.on_policy:
            if self.agent.ready():
                self.consistent = False
                with self._timer("train"):
                    metrics, gradient_steps = self.agent.update()
                self.consistent = True
                self.training_started = True
                if self._good_update(metrics):
                    self.train_metrics.add(metrics)
                    self.updates += int(gradient_steps)
            return
        if not self.training_started:
            if len(self.replay) < self.train_fill:
                return
            self.training_started = True
        self.credit += new_steps * self.updates_per_step
        # A small tolerance so that 0.1 * 10 counts as one update, not 0.999... updates.
        due = int(self.credit + 1e-9)
        for _ in range(due):
            with self._timer("replay_sample"):
                batch = self.replay.sample(self.config.batch_size)
            self.consistent = False
            with self._timer("train"):
                metrics, replay_updates = self.agent.train(batch)
            # Credit is spent one update at a time, so that a run stopped between two updates
            # checkpoints the updates still owed.
            self.credit -= 1
            if self._good_update(metrics):
                if replay_updates:
                    self.replay.update(replay_updates)
                self.train_metrics.add(metrics)
                self.updates += 1
            self.consistent = True

    def _good_update(self, metrics: dict[str, Any]) -> bool:
        """False for an update the backend skipped (``opt/skipped``) for a non-finite loss or gradient;
        raises ``BadUpdatesError`` after ``run.max_bad_updates`` of them in a row."""
        if not float(metrics.get("opt/skipped", 0.0)) > 0.0:
            self.bad_updates = 0
            return True
        self.bad_updates += 1
        # Only the flag is logged for a skipped update: its other metrics are NaN or describe
        # weights that were never applied.
        self.train_metrics.add({"opt/skipped": 1.0})
        terms = sorted(k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v))
        if terms:
            what = "non-finite " + ", ".join(terms)
        elif not np.isfinite(metrics.get("opt/loss", 0.0)):
            what = "a non-finite loss"
        else:
            what = "a non-finite gradient (every loss term finite)"
        message = (
            f"Update skipped at env step {self.env_steps} (weights kept): {what}; "
            f"{self.bad_updates} in a row, the run stops at {self.max_bad_updates} (run.max_bad_updates)."
        )
        _say(message)
        if self.bad_updates >= self.max_bad_updates:
            self.consistent = True  # the skipped updates left the weights as they were
            raise BadUpdatesError(
                f"{self.bad_updates} updates in a row had {what} at env step {self.env_steps}; each was "
                "skipped, so the checkpoint holds the weights of the last finite update. Look for extreme "
                "rewards or observations, or lower agent.opt.lr."
            )
        return False

    def _finish_episode(self, record: dict[str, Any]) -> None:
        self.episodes += 1
        extras = {k: v for k, v in record.items() if k not in ("score", "length")}
        self.logger.episode(record["score"], record["length"], self.env_steps, **extras)
        self.episode_metrics.add({"score": record["score"], "length": record["length"]})
        self.histogram_returns.append(float(record["score"]))

    def _eval_due(self) -> bool:
        every = self.config.run.eval_every
        if every <= 0:
            return False
        return self.last_eval_step is None or self.env_steps >= self.last_eval_step + every

    def _video_due(self, mode: str) -> bool:
        every, last = self.config.run.video_every, self.last_video[mode]
        return every > 0 and (last is None or self.env_steps >= last + every)

    def _record(self, recorder: _Recorder, obs: dict[str, np.ndarray], mode: str) -> bool:
        """Feed environment 0's step to ``recorder``; write the videos when a recorded episode ends."""
        if recorder.frames is None and not (obs["is_first"][0] and self._video_due(mode)):
            return False
        videos = recorder.add(obs, due=True)
        if videos is None:
            return False
        self.last_video[mode] = self.env_steps
        for key, frames in videos.items():
            self.logger.video(f"episode/{mode}/{key}", frames, self.env_steps)
        return True

    def report(self) -> None:
        """Open-loop predictions of agents that have a ``report`` (DreamerV3) on a few replayed sequences:
        videos and plots to the logger's media, scalars to the next metrics row."""
        report = getattr(self.agent, "report", None)
        if report is None or self.replay is None or not self.training_started:
            return
        start = time.perf_counter()
        count = min(REPORT_SEQUENCES, self.config.batch_size)
        # Sampled apart from training's sampling, so that a report never changes the course of a run.
        peek = getattr(self.replay, "peek", None)
        batch = peek(count, self.env_steps) if peek else self.replay.sample(count)
        context = max(1, min(REPORT_CONTEXT, self.config.batch_length - 1))
        metrics, media = report(batch, sequences=count, context=context)
        from dreamer_tf.run.media import openloop_grid

        for tag, value in media.items():
            if value.ndim == 5:
                self.logger.video(tag, openloop_grid(value, context), self.env_steps)
            else:
                self.logger.image(tag, value, self.env_steps)
        self.logger.step = self.env_steps
        self.logger.add(metrics)
        self.timers.add({"report": time.perf_counter() - start}, agg="sum")

    def evaluate(self) -> None:
        """Run ``run.eval_eps`` episodes with ``mode="eval"``; log their mean to ``metrics.jsonl``."""
        start = time.perf_counter()
        if self.eval_envs is None:
            self.eval_envs = self.make_envs(self.config, "eval")
        envs, wanted = self.eval_envs, int(self.config.run.eval_eps)
        count = len(envs)
        acts = self._zero_actions(self.act_space, count)
        acts["reset"] = np.ones(count, bool)
        state = self.agent.init_policy(count)
        episodes, finished = _Episodes(count), []
        # Only the round's first episode of environment 0 is recorded.
        recorder, recording = _Recorder(), self._video_due("eval")
        while len(finished) < wanted:
            try:
                with self.stop.interruptible():
                    obs = envs.step(acts)
            except _StepInterrupted:
                break
            obs_agent = {k: v for k, v in obs.items() if not k.startswith("log/")}
            self._check_finite(obs_agent, self.env_steps, "Evaluation environment")
            acts, state, _ = self.agent.policy(obs_agent, state, mode="eval")
            acts = {k: np.asarray(v) for k, v in acts.items()}
            for index in range(count):
                record = episodes.add(index, obs)
                if record is not None:
                    finished.append(record)
            if recording and self._record(recorder, obs, "eval"):
                recording = False
            acts = {**acts, "reset": obs["is_last"].copy()}
            if self.stop.requested:
                break
        self.last_eval_step = self.env_steps
        self.eval_rounds += 1
        if finished:
            finished = finished[:wanted]
            self.logger.step = self.env_steps
            self.logger.add(
                {
                    "score": float(np.mean([r["score"] for r in finished])),
                    "length": float(np.mean([r["length"] for r in finished])),
                    "episodes": len(finished),
                },
                prefix="eval_episode",
            )
            self.logger.write()
        self.timers.add({"eval": time.perf_counter() - start}, agg="sum")

    def log(self, now: float, final: bool = False) -> None:
        logger = self.logger
        logger.step = self.env_steps
        updates_per_s, env_per_s = self._rates(now)
        logger.add(self.train_metrics.result(), prefix="train")
        logger.add(self.episode_metrics.result(), prefix="episode")
        if self.replay is not None:
            stats = dict(self.replay.stats()) if hasattr(self.replay, "stats") else {}
            stats.setdefault("size", len(self.replay))
            logger.add(stats, prefix="replay")
        elapsed = max(now - self.last_log, 1e-9)
        # Fraction of wall time spent in each part of the loop: where a speed-up has to come from.
        logger.add({k: v / elapsed for k, v in self.timers.result().items()}, prefix="timer")
        logger.add(
            {
                "fps/train": updates_per_s,
                "fps/env": env_per_s,
                "counter/updates": self.updates,
                "counter/episodes": self.episodes,
            }
        )
        if hasattr(logger, "histogram"):
            self._log_histograms(now, final)
        logger.write()
        self.last_log = now
        self.log_env_steps, self.log_updates = self.env_steps, self.updates
        write_status(self.logdir, "running", self.env_steps)

    def _keep_for_histograms(self, acts: dict[str, np.ndarray]) -> None:
        for key, value in acts.items():
            kept = self.histogram_actions.setdefault(key, [])
            if len(kept) * len(value) < HISTOGRAM_ACTIONS:
                kept.append(value)

    def _log_histograms(self, now: float, final: bool) -> None:
        """Actions taken and episode returns since the last write; the agent's weights now and then."""
        for key, values in self.histogram_actions.items():
            self.logger.histogram(f"actions/{key}", np.concatenate(values))
        self.histogram_actions.clear()
        if self.histogram_returns:
            self.logger.histogram("episode/returns", np.asarray(self.histogram_returns))
            self.histogram_returns.clear()
        weights_due = self.last_weights is None or now - self.last_weights >= HISTOGRAM_WEIGHTS_EVERY
        if hasattr(self.agent, "weights") and (weights_due or final):
            for path, value in self.agent.weights().items():
                self.logger.histogram(f"weights/{path}", value)
            self.last_weights = now

    def _rates(self, now: float) -> tuple[float, float]:
        elapsed = max(now - self.last_log, 1e-9)
        return (self.updates - self.log_updates) / elapsed, (self.env_steps - self.log_env_steps) / elapsed

    # ------------------------------------------------------------ helpers

    def _timer(self, name: str) -> _Section:
        return _Section(self.timers, name)

    def _print_memory_estimate(self, example_step: dict[str, np.ndarray]) -> None:
        if hasattr(self.replay, "memory_estimate"):
            print(f"Replay memory: {self.replay.memory_estimate(example_step)}", file=sys.stderr)

    @staticmethod
    def _zero_actions(act_space: dict[str, Any], count: int) -> dict[str, np.ndarray]:
        return {k: np.zeros((count,) + tuple(v.shape), v.dtype) for k, v in act_space.items()}

    @staticmethod
    def _check_finite(obs: dict[str, np.ndarray], env_steps: int, label: str = "Environment") -> None:
        """Refuse a NaN or infinite reward or float observation before anything stores or learns from it.

        Steps are counted one environment at a time, so environment ``i`` of this batch would have
        made env step ``env_steps + i + 1``.
        """
        for key, value in obs.items():
            if value.dtype.kind not in "fc":
                continue
            finite = np.isfinite(value.reshape(len(value), -1)).all(1)
            if finite.all():
                continue
            index = int(np.argmin(finite))
            bad = ~np.isfinite(value[index])
            shown = value[index] if bad.size == 1 else f"{np.count_nonzero(bad)} of {bad.size} entries"
            raise NonFiniteError(
                f"{label} {index} returned a non-finite '{key}' ({shown}) at env step "
                f"{env_steps + index + 1}; the run stopped before storing or training on it. Fix or wrap "
                "the environment (dreamer_tf.envs.check.check_env finds such steps)."
            )

    def _check_policy_output(self, acts: dict, extra: dict, obs: dict, count: int) -> None:
        missing = set(self.act_space) - set(acts)
        assert not missing, (
            f"policy returned actions {sorted(acts)} but the action space needs {sorted(missing)}"
        )
        for key, value in {**acts, **extra}.items():
            assert value.ndim >= 1 and len(value) == count, (
                f"policy output '{key}' must have leading dim {count} (environments), got shape {value.shape}"
            )
        clash = set(extra) & (set(acts) | set(obs))
        assert not clash, f"policy extra keys {sorted(clash)} collide with observation or action keys"


class _Section:
    """Adds the seconds spent inside a ``with`` block to a timer aggregator."""

    def __init__(self, timers: Aggregator, name: str) -> None:
        self.timers, self.name = timers, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timers.add({self.name: time.perf_counter() - self.start}, agg="sum")
