"""Execute the suite's runs: each one ``python -m dreamer_tf`` process, locally or on Ray.

    executor = LocalExecutor(workers=2)            # or RayExecutor(address="auto")
    executor.run(specs, on_start=print, on_end=lambda spec, outcome: print(outcome["state"]))

``run_one(spec)`` starts (or resumes) one run in its folder and waits for it. It never raises for
a run that fails: the failure goes into the run's ``status.json`` (with the error the process
printed when the CLI could not record it itself, e.g. an unknown agent) and into the returned
outcome ``{"state", "step", "error", "returncode", "wall_s"}``, and the sweep goes on. The process
output of every attempt is appended to the run's ``train.log``.

Stopping: ``stop_all()`` (what Ctrl-C or SIGTERM of the sweep calls) sends SIGTERM to every
training process, which writes a final checkpoint and exits as ``interrupted``; the next sweep
resumes it. Runs not yet started stay pending.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamer_tf.harness.suite import (
    LOG_FILE,
    RUN_FILE,
    STATUS_FILE,
    RunSpec,
    SuiteError,
    lock_owner,
    read_json,
    write_json,
    write_status,
)

RAY_INSTALL = "pip install ray==2.60.0"
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()
TERMINATE_GRACE_S = 180.0  # a training process needs this long at most for its final checkpoint

Callback = Callable[[RunSpec], None]
EndCallback = Callable[[RunSpec, dict[str, Any]], None]


def stop_all() -> None:
    """Start no more runs and ask every running training process to checkpoint and exit."""
    _STOPPING.set()
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for process in children:
        _signal_group(process, signal.SIGTERM)


def reset_stop() -> None:
    """Allow runs to start again (after ``stop_all``; used by tests that sweep twice)."""
    _STOPPING.clear()


def run_env(spec: RunSpec, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The training process's environment: thread pools sized to the run's CPUs."""
    env = dict(os.environ)
    threads = str(max(1, int(spec.cpus)))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env.setdefault(name, threads)
    env.setdefault("TF_NUM_INTEROP_THREADS", str(max(2, int(spec.cpus) // 2)))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    # The run imports the same dreamer_tf as the sweep, also from a checkout that is not pip-installed.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def run_one(
    spec: RunSpec | Mapping[str, Any],
    python: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one training run to its end; returns its outcome (see the module docstring)."""
    spec = RunSpec.from_dict(spec) if isinstance(spec, Mapping) else spec
    logdir = Path(spec.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if _STOPPING.is_set():
        return _outcome("pending", None, start, error="the sweep was stopped before this run started")
    owner = lock_owner(logdir)
    if owner is not None:
        return _outcome(
            "running", None, start, error=f"running elsewhere: {owner.describe()} holds its folder"
        )
    command = spec.command(python)
    write_json(logdir / RUN_FILE, {**spec.to_dict(), "command": command, "host": socket.gethostname()})
    status_path = logdir / STATUS_FILE
    status_before = status_path.stat().st_mtime_ns if status_path.exists() else None
    with open(logdir / LOG_FILE, "a") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"\n===== {stamp} {socket.gethostname()}: {' '.join(command)}\n")
        log.flush()
        offset = log.tell()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=run_env(spec, env),
            start_new_session=True,  # Ctrl-C in the terminal reaches the sweep, which stops runs cleanly
        )
    with _CHILDREN_LOCK:
        _CHILDREN.add(process)
    timed_out = False
    try:
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = _terminate(process)
        except BaseException:  # Ctrl-C in this thread, or a Ray task cancelled
            _terminate(process)
            raise
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(process)
    holder = lock_owner(logdir)
    if returncode == 2 and holder is not None:
        # Another process took the folder between the check above and the start: its run, its status.
        return _outcome(
            "running", returncode, start, error=f"running elsewhere: {holder.describe()} holds its folder"
        )
    return _finish(spec, returncode, start, offset, status_before, timed_out, timeout)


def _finish(
    spec: RunSpec,
    returncode: int,
    start: float,
    offset: int,
    status_before: int | None,
    timed_out: bool,
    timeout: float | None,
) -> dict[str, Any]:
    logdir = Path(spec.logdir)
    status_path = logdir / STATUS_FILE
    status = read_json(status_path) or {}
    written = status_path.exists() and status_path.stat().st_mtime_ns != status_before
    step = int(status.get("step", 0))
    if returncode == 0 and status.get("status") == "done":
        return _outcome("done", returncode, start, step=step)
    if written and status.get("status") == "interrupted" and not timed_out:
        return _outcome("interrupted", returncode, start, step=step)
    output = _log_tail(logdir / LOG_FILE, offset)
    if timed_out:
        error = f"stopped after the run timeout of {timeout:g} s\n{output}"
    elif written and status.get("status") == "failed" and status.get("error"):
        error = status["error"]
    else:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        error = f"training process ended ({how}) without recording a result; its output:\n{output}"
    # The CLI writes status.json itself once its loop runs; an early death (bad flags, unknown agent,
    # a crash) is recorded here so that every failed run has its error in its folder.
    if not (written and status.get("status") == "failed"):
        write_status(logdir, "failed", step, error, returncode=returncode)
    return _outcome("failed", returncode, start, step=step, error=error)


def _outcome(
    state: str, returncode: int | None, start: float, step: int = 0, error: str = ""
) -> dict[str, Any]:
    return {
        "state": state,
        "step": step,
        "error": error,
        "returncode": returncode,
        "wall_s": round(time.time() - start, 1),
    }


def _log_tail(path: Path, offset: int, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as file:
            file.seek(offset)
            text = file.read()
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the run and its environment workers
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass


def _terminate(process: subprocess.Popen) -> int:
    """SIGTERM (the run checkpoints and exits), then SIGKILL after the grace period."""
    _signal_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        return process.wait()


# ------------------------------------------------------------------ executors


def visible_gpus() -> int:
    """How many NVIDIA GPUs this machine shows (CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


class LocalExecutor:
    """A pool of worker slots on this machine, each running one training process at a time.

    ``workers`` defaults to what the runs' declared resources allow: CPU cores / CPUs per run, and
    with GPUs present, GPUs / GPUs per run (each slot then sees its own GPU through
    ``CUDA_VISIBLE_DEVICES``). Without GPUs, runs that declare one run on the CPU.
    """

    def __init__(self, workers: int | None = None, timeout: float | None = None) -> None:
        self.workers = workers
        self.timeout = timeout
        self.gpus = visible_gpus()

    def describe(self, specs: Sequence[RunSpec]) -> str:
        gpus = f", {self.gpus} GPUs" if self.gpus else ", no GPU"
        return f"local pool of {self.pool_size(specs)} workers ({os.cpu_count()} CPU cores{gpus})"

    def pool_size(self, specs: Sequence[RunSpec]) -> int:
        if self.workers:
            return max(1, int(self.workers))
        cpus = max((spec.cpus for spec in specs), default=1.0) or 1.0
        size = max(1, int((os.cpu_count() or 1) // cpus))
        gpus = max((spec.gpus for spec in specs), default=0.0)
        if gpus > 0 and self.gpus:
            size = min(size, max(1, int(self.gpus / gpus)))
        return size

    def _device_env(self, slot: int, spec: RunSpec) -> dict[str, str]:
        """The GPUs of a pool slot: ``spec.gpus`` of them (at least one), consecutive from slot x gpus."""
        if spec.gpus <= 0 or not self.gpus or "CUDA_VISIBLE_DEVICES" in os.environ:
            return {}
        count = min(self.gpus, max(1, int(spec.gpus)))
        first = int(slot * spec.gpus) % self.gpus
        return {"CUDA_VISIBLE_DEVICES": ",".join(str((first + i) % self.gpus) for i in range(count))}

    def run(self, specs: Sequence[RunSpec], on_start: Callback, on_end: EndCallback) -> None:
        """Run every spec; the callbacks are called from the worker threads (they must be thread-safe)."""
        size = self.pool_size(specs)
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(size):
            slots.put(slot)

        def task(spec: RunSpec) -> None:
            slot = slots.get()
            try:
                if _STOPPING.is_set():
                    return
                on_start(spec)
                outcome = run_one(spec, timeout=self.timeout, env=self._device_env(slot, spec))
                if outcome["state"] != "pending":
                    on_end(spec, outcome)
            finally:
                slots.put(slot)

        pool = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="suite-run")
        futures = [pool.submit(task, spec) for spec in specs]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            # Ctrl-C / SIGTERM of the sweep: the running processes checkpoint and report, then re-raise.
            stop_all()
            concurrent.futures.wait(futures)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_task(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    # Runs on a Ray worker: the worker's own Python (with dreamer_tf installed) starts the run.
    return run_one(spec, timeout=timeout)


class RayExecutor:
    """Each run is a Ray task that declares the run's CPUs and GPUs.

    ``address`` is a running cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local
    Ray instance with ``num_cpus`` / ``num_gpus``. The run folders must be on a file system that the
    cluster's nodes and this machine share. At most as many runs are in flight as the cluster has
    room for, so "running" in the progress view means running.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        timeout: float | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as error:
            raise SuiteError(
                f"The Ray executor needs the 'ray' package, which is not installed ({error}). "
                f"Install it with: {RAY_INSTALL} (pinned in requirements.txt), or use --executor local."
            ) from error
        self.ray = ray
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.timeout = timeout
        self._started_here = False

    def describe(self, specs: Sequence[RunSpec]) -> str:
        where = self.address or f"a local Ray instance ({self.num_cpus or os.cpu_count()} CPUs)"
        return f"Ray at {where}"

    def _init(self) -> dict[str, float]:
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs.update(num_cpus=self.num_cpus, num_gpus=self.num_gpus, include_dashboard=False)
            ray.init(**kwargs)
            self._started_here = True
        return dict(ray.cluster_resources())

    def shutdown(self) -> None:
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()
            self._started_here = False

    def run(self, specs: Sequence[RunSpec], on_start: Callback, on_end: EndCallback) -> None:
        """Run every spec as a Ray task; both callbacks are called from this thread."""
        ray = self.ray
        resources = self._init()
        if not specs:
            return
        cpus = max(spec.cpus for spec in specs)
        gpus = max(spec.gpus for spec in specs)
        have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if cpus > have_cpus or gpus > have_gpus:
            raise SuiteError(
                f"Each run declares {cpus:g} CPUs and {gpus:g} GPUs but the Ray cluster has "
                f"{have_cpus:g} CPUs and {have_gpus:g} GPUs: no run could ever be scheduled. "
                "Use --cpus-per-run / --gpus-per-run, or a bigger cluster."
            )
        capacity = int(have_cpus // cpus) if cpus else len(specs)
        if gpus:
            capacity = min(capacity, int(have_gpus // gpus))
        remote = ray.remote(_ray_task)
        waiting = list(specs)
        in_flight: dict[Any, RunSpec] = {}
        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < max(1, capacity) and not _STOPPING.is_set():
                    spec = waiting.pop(0)
                    options = {
                        "num_cpus": spec.cpus,
                        "num_gpus": spec.gpus,
                        "name": spec.run_id,
                        "max_retries": 0,
                    }
                    in_flight[remote.options(**options).remote(spec.to_dict(), self.timeout)] = spec
                    on_start(spec)
                if not in_flight:
                    break
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
                for ref in done:
                    spec = in_flight.pop(ref)
                    on_end(spec, self._result(ref, spec))
        except BaseException:
            _STOPPING.set()
            for ref in in_flight:
                ray.cancel(ref)  # the task sends SIGTERM to its run, which checkpoints
            ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=TERMINATE_GRACE_S + 30)
            for ref in ready:
                on_end(in_flight[ref], self._result(ref, in_flight[ref]))
            raise
        finally:
            self.shutdown()

    def _result(self, ref: Any, spec: RunSpec) -> dict[str, Any]:
        try:
            return self.ray.get(ref)
        except Exception as error:  # noqa: BLE001 - a task that died (node lost, cancelled)
            status = read_json(Path(spec.logdir) / STATUS_FILE) or {}
            state = "interrupted" if status.get("status") == "interrupted" else "failed"
            message = f"Ray task failed: {type(error).__name__}: {error}"
            if state == "failed":
                write_status(spec.logdir, "failed", int(status.get("step", 0)), message)
            return {
                "state": state,
                "step": int(status.get("step", 0)),
                "error": "" if state == "interrupted" else message,
                "returncode": None,
                "wall_s": None,
            }


def make_executor(
    kind: str,
    workers: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    timeout: float | None = None,
) -> LocalExecutor | RayExecutor:
    """``local`` or ``ray`` (see the classes)."""
    if kind == "local":
        return LocalExecutor(workers=workers, timeout=timeout)
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus, num_gpus=num_gpus, timeout=timeout)
    raise SuiteError(f"Unknown executor '{kind}': use local or ray.")
