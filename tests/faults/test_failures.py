"""Failures keep the work: an environment that raises, a worker that dies or a full disk end the run
with ``failed`` and the reason in ``status.json`` and, where the state allows, a final checkpoint;
temporary files of interrupted writes are removed when the next run starts."""

from __future__ import annotations

import errno
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.envs.parallel import BatchEnv, WorkerError
from dreamer_tf.random_agent import RandomAgent
from dreamer_tf.run import loop
from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.metrics import Logger
from dreamer_tf.run.replay import Replay
from tests.helpers.faulty_envs import DieInStepEnv, NanRewardEnv, RaiseInStepEnv

# The random agent and the real replay: no Keras model is built.
pytestmark = pytest.mark.backend_independent

HEALTHY = functools.partial(NanRewardEnv, at=10**9)


def make_config(**overrides):
    base = {
        "run.steps": 400,
        "run.envs": 2,
        "run.log_every": 0.0,
        "run.save_every": -1.0,  # no periodic checkpoint: any checkpoint is the final one
        "run.progress": False,
        "replay_context": 0,
    }
    base.update(overrides)
    return load_config(["debug"]).update(base)


def run(logdir, config, env_fns, parallel="none", on_envs=None):
    def make_envs(config, mode="train"):
        if on_envs is not None:
            on_envs()
        return BatchEnv(env_fns, parallel=parallel, timeout=60)

    return loop.train(
        lambda obs_space, act_space, config: RandomAgent(obs_space, act_space, config),
        lambda config: Replay(config.batch_length + config.replay_context, 10_000),
        make_envs,
        lambda config, logdir: Logger(logdir, config.run.steps, progress=False),
        config,
        logdir,
    )


def saved_steps(logdir: Path) -> int:
    replay = Replay(8, 10_000)
    state = Checkpoint(logdir / "checkpoint").load(replay=replay)
    assert state is not None, "no final checkpoint"
    assert len(replay) == state["loop"]["env_steps"]
    return state["loop"]["env_steps"]


@pytest.mark.parametrize("parallel", ["none", "process"])
def test_an_environment_that_raises_in_step_leaves_a_checkpoint(tmp_path, parallel):
    with pytest.raises(RuntimeError, match="failed on purpose at step 30"):
        run(tmp_path, make_config(), [HEALTHY, functools.partial(RaiseInStepEnv, at=30)], parallel)
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed" and status["step"] == 58
    assert status["error"].rstrip().splitlines()[-1].endswith("RaiseInStepEnv failed on purpose at step 30")
    assert saved_steps(tmp_path) == 58


def test_a_worker_that_dies_leaves_a_checkpoint(tmp_path):
    with pytest.raises(WorkerError, match="Environment worker 1 died"):
        run(tmp_path, make_config(), [HEALTHY, functools.partial(DieInStepEnv, at=30)], "process")
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed" and "Environment worker 1 died" in status["error"]
    assert saved_steps(tmp_path) == 58


def test_a_failure_inside_an_update_writes_no_checkpoint_but_says_so(tmp_path):
    class BrokenAgent(RandomAgent):
        def train(self, batch):
            raise MemoryError("the update exhausted the memory")

    with pytest.raises(MemoryError):
        loop.train(
            lambda obs_space, act_space, config: BrokenAgent(obs_space, act_space, config),
            lambda config: Replay(config.batch_length + config.replay_context, 10_000),
            lambda config, mode="train": BatchEnv([HEALTHY, HEALTHY], parallel="none"),
            lambda config, logdir: Logger(logdir, config.run.steps, progress=False),
            make_config(),
            tmp_path,
        )
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed"
    assert status["error"].rstrip().splitlines()[-1] == "MemoryError: the update exhausted the memory"
    # The agent may be half updated: no checkpoint of it, and status.json says why. The only
    # checkpoint is the one every new run writes at step 0, before the failure.
    assert status["error"].startswith("No final checkpoint: the run failed while its state was half updated.")
    assert status["step"] > 0
    assert Checkpoint(tmp_path / "checkpoint").load()["loop"]["env_steps"] == 0


def full_disk(monkeypatch):
    """New files cannot be written (numpy archives, and the status file's temporary copy)."""

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    write_text = Path.write_text

    def write_text_or_fail(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            no_space()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text_or_fail)


def test_a_full_disk_ends_the_run_as_failed_without_stray_files(tmp_path, monkeypatch):
    run(tmp_path, make_config(**{"run.steps": 40}), [HEALTHY, HEALTHY])  # a checkpoint at step 40
    with pytest.raises(OSError, match="No space left"):
        # The disk fills up once the resumed run has said "running".
        run(
            tmp_path,
            make_config(**{"run.steps": 80}),
            [HEALTHY, HEALTHY],
            on_envs=lambda: full_disk(monkeypatch),
        )
    monkeypatch.undo()
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed", status
    assert status["error"].rstrip().splitlines()[-1] == "OSError: [Errno 28] No space left on device"
    assert "No final checkpoint: saving it failed" in status["error"]
    assert not list((tmp_path / "checkpoint").glob("tmp-*"))
    assert not list(tmp_path.glob(".status.json.*"))
    assert saved_steps(tmp_path) == 40  # the last good checkpoint is untouched
    # With space again, the run resumes from it and finishes.
    assert run(tmp_path, make_config(**{"run.steps": 80}), [HEALTHY, HEALTHY]) == "done"
    assert saved_steps(tmp_path) == 80


def test_temporary_files_of_interrupted_writes_are_removed_at_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = [
        tmp_path / "checkpoint" / f"tmp-{dead.pid}-0" / "agent.npz",
        tmp_path / "checkpoint" / f"tmp-{dead.pid}-1" / "replay" / "chunk.npz.tmp",
        tmp_path / f".status.json.{dead.pid}.tmp",
        tmp_path / "metrics.jsonl.tmp",
    ]
    # A save in progress by another live process (pid 1, always running) is left alone.
    live = tmp_path / "checkpoint" / "tmp-1-0" / "agent.npz"
    for path in [*stray, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    seen = {}

    def on_envs():
        seen.update({path: path.exists() for path in [*stray, live]})

    assert run(tmp_path, make_config(**{"run.steps": 20}), [HEALTHY, HEALTHY], on_envs=on_envs) == "done"
    assert seen and not any(seen[path] for path in stray), seen
    assert not (tmp_path / "checkpoint" / f"tmp-{dead.pid}-0").exists()
    assert seen[live]
