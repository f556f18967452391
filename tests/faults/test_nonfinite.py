"""Non-finite data: the loop refuses a NaN / inf reward or observation at the step it arrives, stops
after ``run.max_bad_updates`` skipped updates in a row, and the report shows such a run as failed."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.envs.parallel import BatchEnv
from dreamer_tf.harness import report, results
from dreamer_tf.run import loop
from dreamer_tf.run import train as cli
from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.metrics import Logger, read_jsonl
from dreamer_tf.run.replay import Replay
from tests.helpers.faulty_envs import NanObsEnv, NanRewardEnv

# Fake agents and the real replay: no Keras model is built.
pytestmark = pytest.mark.backend_independent

HEALTHY = functools.partial(NanRewardEnv, at=10**9)


class RecordingAgent:
    """Acts with zeros and records whether any observation or batch it got was non-finite.

    ``skip`` decides per train call (1, 2, ...) whether the update reports ``opt/skipped`` like a
    backend that met a non-finite loss."""

    def __init__(self, obs_space, act_space, config, skip=lambda call: False):
        self.act_space = act_space
        self.saw_nonfinite = False
        self.train_calls = 0
        self.skip = skip

    def init_policy(self, batch_size):
        return None

    def policy(self, obs, state, mode="train"):
        self.saw_nonfinite |= not all(np.isfinite(v).all() for v in obs.values() if v.dtype.kind == "f")
        return {"action": np.zeros(len(obs["is_first"]), np.int32)}, state, {}

    def train(self, batch):
        self.train_calls += 1
        self.saw_nonfinite |= not all(np.isfinite(v).all() for v in batch.values() if v.dtype.kind == "f")
        if self.skip(self.train_calls):
            return {"loss/rew": float("nan"), "loss/dyn": 1.0, "opt/skipped": 1.0}, {
                "stepid": batch["stepid"]
            }
        return {"loss/rew": 0.5, "loss/dyn": 1.0, "opt/skipped": 0.0}, {"stepid": batch["stepid"]}

    def save(self):
        return {"train_calls": self.train_calls, "saw_nonfinite": self.saw_nonfinite}

    def load(self, state):
        self.train_calls = state["train_calls"]


class CountingReplay(Replay):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates = 0

    def update(self, data):
        self.updates += 1
        super().update(data)


def make_config(**overrides):
    base = {
        "run.steps": 400,
        "run.envs": 2,
        "run.log_every": 0.0,
        "run.save_every": -1.0,
        "run.progress": False,
        "run.train_ratio": 8.0,
        "replay_context": 0,
    }
    base.update(overrides)
    return load_config(["debug"]).update(base)


def run(logdir, config, env_fns, agents=None, replays=None, skip=lambda call: False):
    agents = [] if agents is None else agents
    replays = [] if replays is None else replays

    def make_agent(obs_space, act_space, config):
        agents.append(RecordingAgent(obs_space, act_space, config, skip))
        return agents[-1]

    def make_replay(config):
        replays.append(CountingReplay(config.batch_length + config.replay_context, 10_000))
        return replays[-1]

    def make_envs(config, mode="train"):
        return BatchEnv(env_fns, parallel="none")

    def make_logger(config, logdir):
        return Logger(logdir, config.run.steps, progress=False)

    return loop.train(make_agent, make_replay, make_envs, make_logger, config, logdir)


def saved(logdir: Path) -> tuple[dict, Replay]:
    replay = Replay(8, 10_000)
    state = Checkpoint(logdir / "checkpoint").load(replay=replay)
    assert state is not None, "no final checkpoint"
    return state, replay


@pytest.mark.parametrize(
    "env,key,shown",
    [
        (functools.partial(NanRewardEnv, at=30), "reward", "nan"),
        (functools.partial(NanRewardEnv, at=30, value=float("inf")), "reward", "inf"),
        (functools.partial(NanObsEnv, at=30), "vector", "1 of 3 entries"),
    ],
)
def test_a_non_finite_step_stops_the_run_before_it_is_stored(tmp_path, env, key, shown):
    agents = []
    # Environment 1 turns bad on its 30th step, after 29 iterations of 2 env steps.
    with pytest.raises(loop.NonFiniteError) as error:
        run(tmp_path, make_config(), [HEALTHY, env], agents)
    message = str(error.value)
    assert f"Environment 1 returned a non-finite '{key}' ({shown}) at env step 60" in message
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed" and status["error"] == message and status["step"] == 58
    # The final checkpoint holds the last finite state: 58 steps, nothing of the bad one.
    state, replay = saved(tmp_path)
    assert state["loop"]["env_steps"] == 58 and len(replay) == 58
    assert state["agent"]["train_calls"] > 0 and not state["agent"]["saw_nonfinite"]
    assert not agents[0].saw_nonfinite
    for _ in range(20):
        batch = replay.sample(4)
        assert all(np.isfinite(v).all() for v in batch.values() if v.dtype.kind == "f")
    for row in read_jsonl(tmp_path / "scores.jsonl") + read_jsonl(tmp_path / "metrics.jsonl"):
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float)), row


def test_the_cli_reports_a_non_finite_step_in_one_line(tmp_path, monkeypatch, capsys):
    def make_envs(config, mode="train"):
        return BatchEnv([HEALTHY, functools.partial(NanRewardEnv, at=30)], parallel="none")

    monkeypatch.setattr(cli, "make_envs", make_envs)
    code = cli.main(
        [
            "--configs",
            "debug",
            "--agent",
            "random",
            "--logdir",
            str(tmp_path),
            "--run.steps",
            "400",
            "--run.progress",
            "false",
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Environment 1 returned a non-finite 'reward' (nan) at env step 60" in lines[0]
    assert loop.read_status(tmp_path)["status"] == "failed"


def test_skipped_updates_stop_the_run_after_max_bad_updates(tmp_path, capsys):
    agents, replays = [], []
    config = make_config(**{"run.max_bad_updates": 3})
    with pytest.raises(loop.BadUpdatesError, match=r"3 updates in a row had non-finite loss/rew"):
        run(tmp_path, config, [HEALTHY, HEALTHY], agents, replays, skip=lambda call: call >= 6)
    (agent,), (replay,) = agents, replays
    assert agent.train_calls == 8
    assert replay.updates == 5  # a skipped update's replay updates are dropped
    err = capsys.readouterr().err
    assert err.count("Update skipped at env step") == 3 and "non-finite loss/rew" in err
    status = loop.read_status(tmp_path)
    assert status["status"] == "failed" and "3 updates in a row" in status["error"]
    state, _ = saved(tmp_path)
    assert state["loop"]["updates"] == 5 and state["agent"]["train_calls"] == 8
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    skipped = [row["train/opt/skipped"] for row in rows if "train/opt/skipped" in row]
    assert skipped and skipped[-1] > 0
    # Only finite metrics were logged: a skipped update contributes the flag alone.
    assert all(np.isfinite(row.get("train/loss/rew", 0.0)) for row in rows)


def test_isolated_skipped_updates_do_not_stop_the_run(tmp_path):
    agents = []
    config = make_config(**{"run.max_bad_updates": 2})
    status = run(tmp_path, config, [HEALTHY, HEALTHY], agents, skip=lambda call: call % 3 == 0)
    assert status == "done" and agents[0].train_calls > 6


def test_the_report_shows_the_failed_run_with_its_reason(tmp_path):
    logdir = tmp_path / "runs" / "nan_run"
    config = make_config().update({"logdir": str(logdir), "task": "dummy_disc"})
    with pytest.raises(loop.NonFiniteError):
        run(logdir, config, [HEALTHY, functools.partial(NanRewardEnv, at=30)])
    config.save(logdir / "config.yaml")
    (found,) = results.find_runs(tmp_path / "runs")
    assert found.state == "failed"
    assert "Environment 1 returned a non-finite 'reward' (nan) at env step 60" in found.error
    table = report.display_runs(results.runs_table([found]))
    row = table.iloc[0]
    assert row["State"] == "failed" and "non-finite 'reward'" in row["Error"]
    final = results.final_scores([found])
    assert final.iloc[0]["state"] == "failed" and np.isfinite(final.iloc[0]["score"])
    assert json.loads((logdir / "status.json").read_text())["status"] == "failed"
