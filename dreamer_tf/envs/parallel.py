"""A batch of environments stepped together, in subprocesses or in this process.

    fns = [functools.partial(dreamer_tf.envs.make, "dummy_disc", config) for _ in range(4)]
    with BatchEnv(fns, parallel="process") as envs:
        obs = envs.step({"reset": np.ones(4, bool), "action": np.zeros(4, np.int32)})
        obs["image"].shape                               # (4, 64, 64, 3)

``parallel="process"`` runs every environment in its own subprocess started with the ``spawn``
method: forking a process that has TensorFlow or JAX loaded can deadlock, so workers start from
a fresh interpreter and ``env_fns`` must be picklable (a ``functools.partial`` of a module-level
function, not a lambda). A step is sent to all workers before any answer is awaited, so the
environments run concurrently. An exception in a worker is raised again here, with its original
type and message and the worker's traceback as its cause; a worker that does not answer within
``timeout`` seconds raises ``TimeoutError``. ``parallel="none"`` steps the environments one after
the other in this process, with the same results; there the same ``timeout`` is enforced with a
``SIGALRM`` timer when the batch runs in the main thread (signals reach only the main thread).
``state()`` and ``load_state()`` save and restore every environment mid-episode where the
environments support it (``dreamer_tf.envs.base``).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np

from dreamer_tf.spaces import Space

MODES = ("process", "none")


class WorkerError(RuntimeError):
    """An environment worker failed with an exception that could not be sent back as it was."""


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the re-raised exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


class BatchEnv:
    """``len(env_fns)`` environments behind one ``step`` with arrays of leading dimension N.

    Args:
        env_fns: callables that each create one ``dreamer_tf.envs.base.Env``; all environments must
            have the same spaces. With ``parallel="process"`` they must be picklable.
        parallel: ``"process"`` (one subprocess per environment) or ``"none"`` (this process).
        timeout: seconds a worker may take to create its environment or answer a step.
    """

    def __init__(
        self, env_fns: Sequence[Callable[[], Any]], parallel: str = "process", timeout: float = 180.0
    ) -> None:
        if parallel not in MODES:
            raise ValueError(f"BatchEnv parallel must be one of {MODES}, got '{parallel}'.")
        if not env_fns:
            raise ValueError("BatchEnv needs at least one environment factory.")
        self.parallel = parallel
        self.timeout = float(timeout)
        self._closed = False
        self._envs: list[Any] = []
        self._workers: list[_Worker] = []
        if parallel == "none":
            try:
                for index, fn in enumerate(env_fns):
                    with _alarm(self.timeout, index, "create the environment"):
                        self._envs.append(fn())
            except BaseException:
                self.close()
                raise
            spaces = [(env.obs_space, env.act_space) for env in self._envs]
        else:
            for index, fn in enumerate(env_fns):
                try:
                    pickle.dumps(fn)
                except Exception as error:
                    raise TypeError(
                        f"env_fns[{index}] ({fn!r}) cannot be pickled, which parallel='process' needs; use "
                        "functools.partial of a module-level function instead of a lambda or closure, or "
                        "parallel='none'."
                    ) from error
            context = multiprocessing.get_context("spawn")
            self._workers = [_Worker(context, fn, index) for index, fn in enumerate(env_fns)]
            # Closing must happen even if the user never calls close(): on garbage collection and at exit.
            self._finalizer = weakref.finalize(self, _shutdown, list(self._workers))
            try:
                spaces = self._receive_all("create the environment")
            except BaseException:
                self.close()
                raise
        self._obs_space, self._act_space = spaces[0]
        for index, (obs_space, act_space) in enumerate(spaces[1:], 1):
            for label, mine, theirs in (
                ("obs_space", self._obs_space, obs_space),
                ("act_space", self._act_space, act_space),
            ):
                if mine != theirs:
                    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                    self.close()
                    raise ValueError(
                        f"Environment {index} has a different {label} than environment 0 at key(s) {diff}: "
                        f"{[theirs.get(k) for k in diff]} vs {[mine.get(k) for k in diff]}."
                    )
        if "reset" not in self._act_space:
            self.close()
            raise ValueError(
                f"act_space lacks 'reset' ({sorted(self._act_space)}); see dreamer_tf.envs.base."
            )

    def __len__(self) -> int:
        return len(self._envs) or len(self._workers)

    @property
    def obs_space(self) -> dict[str, Space]:
        """Observation space of one environment (all are equal)."""
        return self._obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        """Action space of one environment (all are equal), ``reset`` included."""
        return self._act_space

    def step(self, actions: dict[str, Any]) -> dict[str, np.ndarray]:
        """Step every environment; ``actions[key]`` has leading dim N, ``actions["reset"]`` is (N,) bool.

        Returns observations stacked to ``(N, *space.shape)`` with the declared dtypes.
        """
        if self._closed:
            raise RuntimeError("BatchEnv.step after close().")
        count = len(self)
        missing = sorted(set(self._act_space) - set(actions))
        if missing:
            raise KeyError(
                f"BatchEnv.step: actions lack the key(s) {missing} (act_space: {sorted(self._act_space)})."
            )
        arrays = {key: np.asarray(value) for key, value in actions.items()}
        for key, value in arrays.items():
            if value.ndim < 1 or len(value) != count:
                raise ValueError(
                    f"BatchEnv.step: action '{key}' must have leading dim {count} (environments), got shape "
                    f"{value.shape}."
                )
        per_env = [{key: value[i] for key, value in arrays.items()} for i in range(count)]
        if self._envs:
            results = []
            for index, (env, action) in enumerate(zip(self._envs, per_env)):
                with _alarm(self.timeout, index, "step"):
                    results.append(env.step(action))
        else:
            for worker, action in zip(self._workers, per_env):
                worker.send(("step", action))
            results = self._receive_all("step")
        return self._stack(results)

    def state(self) -> list[Any] | None:
        """Every environment's ``state()``, or None when one of them cannot save its state."""
        if self._closed:
            raise RuntimeError("BatchEnv.state after close().")
        if self._envs:
            states = [env.state() for env in self._envs]
        else:
            for worker in self._workers:
                worker.send(("state", None))
            states = self._receive_all("save its state")
        return None if any(state is None for state in states) else states

    def load_state(self, states: Sequence[Any]) -> None:
        """Restore ``state()``'s list. Raises ValueError naming the environments that could not, after
        every one has tried; the batch stays usable (a step with ``reset`` true starts them afresh)."""
        if self._closed:
            raise RuntimeError("BatchEnv.load_state after close().")
        if len(states) != len(self):
            raise ValueError(f"{len(states)} saved environment states for {len(self)} environments")
        if self._envs:
            errors = []
            for env, state in zip(self._envs, states):
                try:
                    env.load_state(state)
                    errors.append(None)
                except Exception as error:  # noqa: BLE001 - reported together below
                    errors.append(f"{type(error).__name__}: {error}")
        else:
            for worker, state in zip(self._workers, states):
                worker.send(("load_state", state))
            errors = self._receive_all("restore its state")
        failed = [(index, error) for index, error in enumerate(errors) if error]
        if failed:
            index, error = failed[0]
            raise ValueError(
                f"{len(failed)} of {len(self)} environments could not restore their state "
                f"(environment {index}: {error})"
            )

    def close(self) -> None:
        """Close the environments and end the worker processes (also done on garbage collection)."""
        if self._closed:
            return
        self._closed = True
        for env in self._envs:
            env.close()
        if self._workers:
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive_all(self, what: str) -> list[Any]:
        deadline = time.monotonic() + self.timeout
        results = []
        for worker in self._workers:
            remaining = deadline - time.monotonic()
            try:
                ok, payload = worker.receive(max(remaining, 0.0))
            except TimeoutError:
                worker.process.terminate()  # it cannot read a close message while hung
                self.close()
                raise TimeoutError(
                    f"Environment worker {worker.index} did not {what} within {self.timeout:g} seconds and "
                    "looks hung; all workers were stopped. Raise the limit (--run.episode_timeout) if the "
                    "environment is just slow."
                ) from None
            except (EOFError, OSError):
                code = worker.exitcode()
                self.close()
                raise WorkerError(
                    f"Environment worker {worker.index} died while trying to {what} (exit code {code}); it "
                    "may have crashed in native code or run out of memory."
                ) from None
            if not ok:
                self.close()
                raise _rebuild_error(payload, worker.index)
            results.append(payload)
        return results

    def _stack(self, results: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        count = len(results)
        out = {}
        for key, space in self._obs_space.items():
            array = np.empty((count, *space.shape), space.dtype)
            for index, obs in enumerate(results):
                if key not in obs:
                    raise KeyError(
                        f"Environment {index} returned no observation '{key}' (it returned {sorted(obs)})."
                    )
                value = np.asarray(obs[key])
                if value.shape != space.shape:
                    raise ValueError(
                        f"Environment {index} returned observation '{key}' with shape {value.shape}, but its "
                        f"obs_space declares {space.shape} ({space})."
                    )
                if not np.can_cast(value.dtype, space.dtype, "same_kind") or (
                    space.dtype == np.uint8 and value.dtype != np.uint8
                ):
                    raise ValueError(
                        f"Environment {index} returned observation '{key}' with dtype {value.dtype}, but its "
                        f"obs_space declares {space.dtype} ({space})."
                    )
                array[index] = value
            out[key] = array
        for index, obs in enumerate(results):
            extra = sorted(set(obs) - set(self._obs_space))
            if extra:
                raise KeyError(
                    f"Environment {index} returned observation key(s) {extra} that its obs_space does not declare."
                )
        return out


class _Hung(BaseException):
    """Raised by the ``SIGALRM`` handler of ``_alarm``; a ``BaseException`` so that an environment's
    ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def _alarm(timeout: float, index: int, what: str) -> Any:
    """Raise ``TimeoutError`` if the block (an in-process environment call) runs past ``timeout`` s.

    A no-op outside the main thread, for a timeout that is not a positive finite number, or when
    someone else (the environment itself, a test harness) has a ``SIGALRM`` handler installed.
    Like the stop signal's handler, it interrupts Python code and sleeps, not a native call that
    never returns to the interpreter: such an environment belongs in a subprocess.
    """
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and 0 < timeout < math.inf
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _Hung

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Hung:
        raise TimeoutError(
            f"Environment {index} did not {what} within {timeout:g} seconds and looks hung. Raise the limit "
            "(--run.episode_timeout) if the environment is just slow."
        ) from None
    finally:
        signal.signal(signal.SIGALRM, previous)


class _Worker:
    """One subprocess running one environment, talked to over a pipe."""

    def __init__(self, context: Any, env_fn: Callable[[], Any], index: int) -> None:
        self.index = index
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, env_fn, index), name=f"env-worker-{index}", daemon=True
        )
        self.process.start()
        child.close()

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def receive(self, timeout: float) -> tuple[bool, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError
        return self.conn.recv()

    def exitcode(self) -> int | None:
        self.process.join(0.5)
        return self.process.exitcode


def _shutdown(workers: list[_Worker]) -> None:
    # Module-level so the finalizer holds no reference to the BatchEnv itself.
    for worker in workers:
        try:
            worker.conn.send(("close", None))
        except (OSError, ValueError, BrokenPipeError):
            pass
    deadline = time.monotonic() + 2.0
    for worker in workers:
        worker.process.join(max(deadline - time.monotonic(), 0.0))
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join(1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1.0)
        worker.conn.close()


def _worker_main(conn: Any, env_fn: Callable[[], Any], index: int) -> None:
    """Subprocess body: create the environment, then answer ``step``, ``state`` and ``load_state``
    messages until ``close``."""
    # Ctrl-C goes to the whole process group; the parent handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["DREAMER_NO_TF"] = "1"  # workers never run the model: MuJoCo need not load TensorFlow first
    env = None
    try:
        try:
            env = env_fn()
            conn.send((True, (env.obs_space, env.act_space)))
        except Exception as error:  # noqa: BLE001 - every failure is reported to the parent
            conn.send((False, _describe_error(error, index)))
            return
        while True:
            try:
                command, payload = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if command == "close":
                return
            if command == "load_state":
                # A state that does not fit is answered, not raised: the parent decides what to do.
                try:
                    env.load_state(payload)
                    conn.send((True, None))
                except Exception as error:  # noqa: BLE001
                    conn.send((True, f"{type(error).__name__}: {error}"))
                continue
            try:
                conn.send((True, env.state() if command == "state" else env.step(payload)))
            except Exception as error:  # noqa: BLE001
                conn.send((False, _describe_error(error, index)))
    except (BrokenPipeError, EOFError, OSError):
        pass
    finally:
        if env is not None:
            # Closing must not mask the reason the worker stops.
            with contextlib.suppress(Exception):
                env.close()
        conn.close()


def _describe_error(error: Exception, index: int) -> dict[str, Any]:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        pickled = pickle.dumps(error)
        pickle.loads(pickled)
    except Exception:  # noqa: BLE001 - unpicklable exceptions are re-raised as WorkerError
        pickled = None
    return {"pickled": pickled, "type": type(error).__name__, "message": str(error), "traceback": text,
            "pid": os.getpid(), "index": index}  # fmt: skip


def _rebuild_error(info: dict[str, Any], index: int) -> BaseException:
    error: BaseException | None = None
    if info["pickled"] is not None:
        try:
            error = pickle.loads(info["pickled"])
        except Exception:  # noqa: BLE001
            error = None
    if error is None:
        error = WorkerError(f"{info['type']}: {info['message']}")
    error.__cause__ = _RemoteTraceback(f'Traceback in environment worker {index} (pid {info["pid"]}):\n'
                                       f'"""\n{info["traceback"]}"""')  # fmt: skip
    if hasattr(error, "add_note"):
        error.add_note(f"Raised in environment worker {index}; its traceback is shown above.")
    return error
