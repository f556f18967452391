"""A run folder has one writer, and a folder whose checkpoint is gone is refused, never erased."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer_tf.config import load_config, read_presets
from dreamer_tf.harness.suite import RunSpec
from dreamer_tf.run.metrics import read_jsonl

# The random agent and the dummy task: no Keras model is built.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--task", "dummy_disc", "--agent", "random", "--configs", "debug", "--run.progress", "false"]
BASE += ["--env.dummy.image", "false", "--run.envs", "1", "--run.parallel", "none"]
HOLD = "import sys, time; from dreamer_tf.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"  # noqa: E501


def cli(logdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamer_tf.run.train", *BASE, "--logdir", str(logdir), *extra]


def run(logdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(logdir, *extra), cwd=ROOT, capture_output=True, text=True, timeout=120)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"the process ended early:\n{process.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def folder_state(logdir: Path) -> dict[str, bytes]:
    """Every file of the run folder with its bytes (the lock file aside: it is the lock)."""
    return {
        p.relative_to(logdir).as_posix(): p.read_bytes()
        for p in sorted(logdir.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_second_process_on_the_same_folder_is_refused_and_a_killed_holder_blocks_nothing(tmp_path):
    logdir = tmp_path / "run"
    first = start(cli(logdir, "--run.steps", "1e8"))
    try:
        wait_for(lambda: len(read_jsonl(logdir / "scores.jsonl")) >= 3, first)
        before = len(read_jsonl(logdir / "scores.jsonl"))
        second = run(logdir, "--run.steps", "1e8")
        line = one_line_error(second)
        assert f"process {first.pid} on host {socket.gethostname()}" in line, line
        assert first.poll() is None  # the holder trains on, alone
        assert len(read_jsonl(logdir / "scores.jsonl")) >= before
    finally:
        kill(first)  # SIGKILL: no chance to release anything
    assert json.loads((logdir / "run.lock").read_text())["pid"] == first.pid  # its record stays behind
    third = run(logdir, "--run.steps", "1")  # the stale record does not block: resumes, already past 1
    assert third.returncode == 0, third.stderr
    assert "Found a checkpoint: resuming." in third.stderr
    assert (logdir / "run.lock").read_text() == ""  # a clean end leaves no record


def test_a_lock_recorded_by_another_host_blocks_while_its_heartbeat_is_fresh(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    lock = logdir / "run.lock"
    lock.write_text(json.dumps({"host": "elsewhere.example", "pid": 4242, "started": None}) + "\n")
    line = one_line_error(run(logdir, "--run.steps", "100"))
    assert "process 4242 on host elsewhere.example" in line, line
    assert not (logdir / "config.yaml").exists()  # refused before anything was written
    stale = time.time() - 3600
    os.utime(lock, (stale, stale))  # its holder stopped refreshing the record an hour ago
    result = run(logdir, "--run.steps", "100")
    assert result.returncode == 0, result.stderr


def test_the_sweep_skips_a_live_holder_and_takes_a_stale_lock(tmp_path):
    spec = RunSpec("quick", "dummy_disc", "random", 0, 100, "test", ("debug",), (), str(tmp_path / "run"))
    logdir = Path(spec.logdir)
    logdir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A record naming a live process of this host that does not hold the lock (a recycled PID), and
        # the old PID-only lock file: neither blocks the run.
        (logdir / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}))
        (logdir / "suite.lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        assert spec.state()[0] == "pending"
    finally:
        sleeper.kill()
        sleeper.wait()
    holder = start([sys.executable, "-c", HOLD, str(logdir)])
    try:
        assert holder.stdout.readline().strip() == "held"
        state, status = spec.state()
        assert state == "running" and f"process {holder.pid}" in status["holder"], status
    finally:
        kill(holder)  # SIGKILL: the kernel drops its lock
    assert spec.state()[0] == "pending"


def test_records_without_a_loadable_checkpoint_are_refused_and_left_untouched(tmp_path):
    logdir = tmp_path / "run"
    result = run(logdir, "--run.steps", "300")
    assert result.returncode == 0, result.stderr
    assert read_jsonl(logdir / "scores.jsonl") and read_jsonl(logdir / "metrics.jsonl")
    (logdir / "checkpoint" / "latest" / "manifest.json").unlink()
    before = folder_state(logdir)
    line = one_line_error(run(logdir, "--run.steps", "600"))
    assert "no loadable checkpoint" in line and "new --logdir" in line and "scores.jsonl" in line, line
    assert folder_state(logdir) == before  # nothing truncated, overwritten or added


def test_every_preset_checkpoints():
    for name in read_presets():
        config = load_config([] if name == "defaults" else [name])
        assert config.run.save_every > 0, f"preset {name} sets run.save_every {config.run.save_every}"


def test_without_flock_a_record_of_this_host_counts_while_its_process_runs(tmp_path, monkeypatch):
    from dreamer_tf.run import lock as run_lock

    def no_flock(fd, operation):
        raise OSError(37, "No locks available")  # ENOLCK, as some network filesystems answer

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = run_lock._process_start(sleeper.pid)
        record = {"host": socket.gethostname(), "pid": sleeper.pid, "started": started}
        (tmp_path / "run.lock").write_text(json.dumps(record))
        with pytest.raises(run_lock.RunLockedError, match=f"process {sleeper.pid} on host"):
            run_lock.RunLock(tmp_path).acquire()
        # The same PID with another start time is a recycled PID: its holder is gone.
        (tmp_path / "run.lock").write_text(json.dumps({**record, "started": started - 1000}))
        lock = run_lock.RunLock(tmp_path)
        lock.acquire()
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()
