"""The training loop end to end with small fakes, and with the real dummy env, replay and RandomAgent."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.run import loop
from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.metrics import Logger, read_jsonl
from dreamer_tf.spaces import Space

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

EPISODE = 10  # observations per fake episode, the reset one included


class FakeEnvs:
    """A batch of deterministic environments: reward 1 per step, episodes of ``EPISODE`` observations."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.t = np.zeros(count, np.int64)
        self.obs_space = {
            "vector": Space(np.float32, (3,)),
            "reward": Space(np.float32),
            "is_first": Space(bool),
            "is_last": Space(bool),
            "is_terminal": Space(bool),
            "log/bonus": Space(np.float32),
        }
        self.act_space = {"action": Space(np.int32, (), 0, 4), "reset": Space(bool)}
        self.closed = False

    def __len__(self) -> int:
        return self.count

    def step(self, action: dict) -> dict:
        assert action["reset"].shape == (self.count,) and action["action"].shape == (self.count,)
        # A finished episode restarts whatever the reset flag says (env contract).
        first = action["reset"] | (self.t >= EPISODE - 1)
        self.t = np.where(first, 0, self.t + 1)
        return {
            "vector": np.repeat(self.t[:, None], 3, 1).astype(np.float32),
            "reward": np.where(first, 0.0, 1.0).astype(np.float32),
            "is_first": first.copy(),
            "is_last": self.t == EPISODE - 1,
            "is_terminal": np.zeros(self.count, bool),
            "log/bonus": np.full(self.count, 0.5, np.float32),
        }

    def close(self) -> None:
        self.closed = True


class SavingFakeEnvs(FakeEnvs):
    """FakeEnvs that can save their episodes under way, like the DMC and dummy environments."""

    def state(self) -> list:
        return [{"t": int(t)} for t in self.t]

    def load_state(self, states: list) -> None:
        self.t = np.array([state["t"] for state in states], np.int64)


class FakeReplay:
    """Counts steps; samples zeros; saves its count so a resume can be checked."""

    def __init__(self, length: int) -> None:
        self.length, self.steps, self.updates = length, [], 0

    def add(self, step: dict, worker: int) -> None:
        assert "reset" not in step and not any(k.startswith("log/") for k in step), sorted(step)
        self.steps.append((worker, {k: np.asarray(v) for k, v in step.items()}))

    def __len__(self) -> int:
        return len(self.steps)

    def sample(self, batch_size: int) -> dict:
        assert len(self) >= batch_size * self.length
        return {
            "vector": np.zeros((batch_size, self.length, 3), np.float32),
            "stepid": np.zeros((batch_size, self.length)),
        }

    def update(self, data: dict) -> None:
        self.updates += 1

    def stats(self) -> dict:
        return {"inserts": len(self.steps)}

    def save(self, directory: Path, previous: Path | None = None) -> None:
        directory.mkdir(parents=True)
        (directory / "count.json").write_text(json.dumps(len(self.steps)))

    def load(self, directory: Path) -> None:
        self.steps = [(0, {})] * json.loads((directory / "count.json").read_text())


class CountingAgent:
    """Counts policy and train calls; returns an ``extra`` latent and replay updates like DreamerV3."""

    def __init__(
        self, obs_space, act_space, config, fail_at: int | None = None, signal_at: int | None = None
    ):
        assert "reset" not in act_space and "log/bonus" not in obs_space
        self.obs_space, self.act_space = obs_space, act_space
        self.train_calls = self.policy_calls = 0
        self.fail_at, self.signal_at = fail_at, signal_at
        self.modes = set()
        self.first_state = None  # the recurrent state of the first training step

    def init_policy(self, batch_size):
        return np.zeros(batch_size)

    def policy(self, obs, state, mode="train"):
        self.modes.add(mode)
        n = len(obs["is_first"])
        if mode == "train":
            if self.first_state is None:
                self.first_state = np.array(state)
            self.policy_calls += 1
            if self.signal_at is not None and self.policy_calls == self.signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
        return {"action": np.ones(n, np.int32)}, state + 1, {"latent": np.zeros((n, 2), np.float32)}

    def train(self, batch):
        self.train_calls += 1
        if self.fail_at is not None and self.train_calls == self.fail_at:
            raise RuntimeError("the world model diverged")
        return {"loss/rep": 0.5, "loss/dyn": np.float32(1.0)}, {"stepid": batch["stepid"]}

    def save(self):
        return {"train_calls": self.train_calls}

    def load(self, state):
        self.train_calls = state["train_calls"]


def make_config(**overrides):
    base = {
        "run.steps": 400,
        "run.envs": 2,
        "run.log_every": 0.05,
        "run.save_every": -1.0,
        "run.progress": False,
        "run.train_ratio": 8.0,
        "batch_size": 4,
        "batch_length": 8,
        "replay_context": 1,
    }
    base.update(overrides)
    return load_config(["debug"]).update(base)


def run_fake(logdir, config, agents=None, replays=None, envs=FakeEnvs, **agent_kwargs):
    agents = [] if agents is None else agents
    replays = [] if replays is None else replays

    def make_agent(obs_space, act_space, config):
        agents.append(CountingAgent(obs_space, act_space, config, **agent_kwargs))
        return agents[-1]

    def make_replay(config):
        replays.append(FakeReplay(config.batch_length + config.replay_context))
        return replays[-1]

    def make_envs(config, mode="train"):
        return envs(config.run.envs if mode == "train" else config.run.eval_envs)

    def make_logger(config, logdir):
        return Logger(logdir, config.run.steps, progress=False)

    status = loop.train(make_agent, make_replay, make_envs, make_logger, config, logdir)
    return status, agents, replays


def expected_updates(config, final_steps):
    """The official Ratio rule: steps from the iteration that filled the buffer on earn updates."""
    n = config.run.envs
    fill = config.batch_size * (config.batch_length + config.replay_context)
    ready = math.ceil(fill / n) * n  # env steps (= FakeReplay size) when the buffer first holds ``fill``
    ratio = config.run.train_ratio / (config.batch_size * config.batch_length)
    return math.floor((final_steps - ready + n) * ratio + 1e-9)


def test_run_folder_and_records(tmp_path):
    config = make_config()
    status, (agent,), (replay,) = run_fake(tmp_path, config)
    assert status == "done"
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "done"
    record = loop.read_status(tmp_path)
    assert record["step"] == 400 and record["error"] is None and record["updated"]
    assert (tmp_path / "checkpoint" / "latest" / "manifest.json").exists()
    assert list(tmp_path.glob("events.out.tfevents.*"))

    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert len(scores) == 400 // EPISODE  # two envs, each finishing an episode every 10 steps
    for row in scores:
        assert row["episode/score"] == EPISODE - 1 and row["episode/length"] == EPISODE
        assert row["episode/log/bonus/sum"] == pytest.approx(0.5 * EPISODE)
    steps = [row["step"] for row in scores]
    assert steps == sorted(set(steps)) and steps[-1] == 400

    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert metrics and metrics[-1]["step"] == 400
    keys = set().union(*metrics)
    for key in (
        "train/loss/rep",
        "train/loss/dyn",
        "fps/train",
        "fps/env",
        "replay/inserts",
        "replay/size",
        "episode/score",
        "counter/updates",
        "timer/env",
    ):
        assert key in keys, (key, sorted(keys))
    assert not any(k.startswith("eval_episode/") for k in keys)
    # Stored steps: observation, action and the agent's extra; never 'reset' or log/ keys.
    _, step = replay.steps[0]
    assert set(step) == {"vector", "reward", "is_first", "is_last", "is_terminal", "action", "latent"}
    assert len(replay) == 400 and replay.updates == agent.train_calls


def test_actions_after_the_last_step_are_stored_as_zero(tmp_path):
    config = make_config(**{"run.steps": 40})
    _, _, (replay,) = run_fake(tmp_path, config)
    for _, step in replay.steps:
        assert step["action"] == (0 if step["is_last"] else 1)


@pytest.mark.parametrize("train_ratio,envs", [(8.0, 2), (3.0, 3), (64.0, 1), (0.0, 2)])
def test_train_ratio_sets_the_number_of_updates(tmp_path, train_ratio, envs):
    config = make_config(**{"run.train_ratio": train_ratio, "run.envs": envs, "run.steps": 300})
    _, (agent,), (replay,) = run_fake(tmp_path, config)
    assert len(replay) >= 300
    assert agent.train_calls == expected_updates(config, len(replay))


def test_train_fill_delays_the_first_update(tmp_path):
    config = make_config(**{"run.train_fill": 200, "run.steps": 300})
    _, (agent,), _ = run_fake(tmp_path, config)
    ratio = 8.0 / 32
    assert agent.train_calls == math.floor((300 - 200 + 2) * ratio)


def test_resume_continues_counters_without_duplicates(tmp_path):
    config = make_config(**{"run.steps": 200})
    run_fake(tmp_path, config)
    first_scores = read_jsonl(tmp_path / "scores.jsonl")
    status, (agent,), (replay,) = run_fake(tmp_path, make_config(**{"run.steps": 400}))
    assert status == "done"
    # Agent and replay came back from the checkpoint, and the update credit too: the total number of
    # updates equals that of one uninterrupted run.
    assert len(replay) == 400
    assert agent.train_calls == expected_updates(config, 400)
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert scores[: len(first_scores)] == first_scores
    steps = [row["step"] for row in scores]
    assert steps == sorted(set(steps)) and steps[-1] == 400
    metric_steps = [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert metric_steps == sorted(metric_steps) and metric_steps[-1] == 400
    # Nothing left to do: a third start returns at once.
    status, (agent,), _ = run_fake(tmp_path, make_config(**{"run.steps": 400}))
    assert status == "done" and agent.policy_calls == 0


def test_resume_continues_the_episodes_under_way(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_fake(whole, make_config(**{"run.steps": 400}), envs=SavingFakeEnvs)
    run_fake(parts, make_config(**{"run.steps": 210}), envs=SavingFakeEnvs)  # stops mid-episode
    _, (resumed,), _ = run_fake(parts, make_config(**{"run.steps": 400}), envs=SavingFakeEnvs)
    assert "Continuing the episodes under way in the checkpoint (2 environments)." in capsys.readouterr().err
    # The episode under way at 210 is scored whole, as in the uninterrupted run: the same records.
    assert read_jsonl(parts / "scores.jsonl") == read_jsonl(whole / "scores.jsonl")
    # The policy went on from its recurrent state after 105 steps, not from a fresh one.
    np.testing.assert_array_equal(resumed.first_state, np.full(2, 105.0))
    # Environments that cannot save their state start new episodes: the one under way is lost.
    run_fake(tmp_path / "lost", make_config(**{"run.steps": 210}))
    run_fake(tmp_path / "lost", make_config(**{"run.steps": 400}))
    lost = read_jsonl(tmp_path / "lost" / "scores.jsonl")
    assert len(lost) == len(read_jsonl(whole / "scores.jsonl")) - 2


def test_resume_with_other_environments_starts_new_episodes(tmp_path, capsys):
    run_fake(tmp_path, make_config(**{"run.steps": 210}), envs=SavingFakeEnvs)
    status, (agent,), _ = run_fake(
        tmp_path, make_config(**{"run.steps": 300, "run.envs": 4}), envs=SavingFakeEnvs
    )
    assert status == "done" and float(agent.first_state.max()) == 0.0
    assert (
        "Starting new episodes: the checkpoint holds 2 environments, this run has 4."
        in capsys.readouterr().err
    )


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    config = make_config(**{"run.steps": 200})
    run_fake(tmp_path, config)
    # Rows a killed run wrote after its last checkpoint, and a line torn by the kill.
    with open(tmp_path / "scores.jsonl", "a") as file:
        file.write(json.dumps({"step": 250, "episode/score": 1.0, "episode/length": 3}) + "\n")
        file.write('{"step": 260, "episode/sc')
    run_fake(tmp_path, make_config(**{"run.steps": 300}))
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert all(row["step"] != 250 for row in rows)
    assert all(line.startswith("{") for line in (tmp_path / "scores.jsonl").read_text().splitlines())
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps))


def test_sigterm_saves_and_reports_interrupted(tmp_path):
    config = make_config(**{"run.steps": 10_000})
    status, _, _ = run_fake(tmp_path, config, signal_at=60)
    assert status == "interrupted"
    record = loop.read_status(tmp_path)
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    assert record["step"] == 120
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    _, (resumed,), (replay,) = run_fake(tmp_path, make_config(**{"run.steps": 140}))
    assert len(replay) == 140 and resumed.train_calls == expected_updates(config, 140)


def test_sigterm_with_a_closed_stderr_still_saves(tmp_path, monkeypatch):
    # A parent that is killed takes the pipe of our stderr with it; the stop must stay clean.
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stderr", ClosedPipe())
    status, _, _ = run_fake(tmp_path, make_config(**{"run.steps": 10_000}), signal_at=60)
    monkeypatch.undo()
    assert status == "interrupted" and loop.read_status(tmp_path)["status"] == "interrupted"
    assert Checkpoint(tmp_path / "checkpoint").exists()


def test_failure_is_recorded_and_raised(tmp_path):
    with pytest.raises(RuntimeError, match="diverged"):
        run_fake(tmp_path, make_config(), fail_at=3)
    record = loop.read_status(tmp_path)
    assert record["status"] == "failed"
    assert "RuntimeError: the world model diverged" in record["error"]
    assert "Traceback" in record["error"]


def test_evaluation_goes_to_metrics_not_scores(tmp_path):
    config = make_config(**{"run.eval_every": 100, "run.eval_eps": 3, "run.eval_envs": 2, "run.steps": 300})
    _, (agent,), _ = run_fake(tmp_path, config)
    assert "eval" in agent.modes
    rows = [row for row in read_jsonl(tmp_path / "metrics.jsonl") if "eval_episode/score" in row]
    assert [row["step"] for row in rows] == [0, 100, 200, 300]  # the last one when the run ends
    assert all(row["eval_episode/score"] == EPISODE - 1 and row["eval_episode/episodes"] == 3 for row in rows)
    assert len(read_jsonl(tmp_path / "scores.jsonl")) == 300 // EPISODE


def test_policy_output_is_checked(tmp_path):
    class BadAgent(CountingAgent):
        def policy(self, obs, state, mode="train"):
            return {"action": np.ones(1, np.int32)}, state, {}

    def make_agent(obs_space, act_space, config):
        return BadAgent(obs_space, act_space, config)

    with pytest.raises(AssertionError, match="leading dim 2"):
        loop.train(
            make_agent,
            lambda c: FakeReplay(9),
            lambda c, mode="train": FakeEnvs(2),
            lambda c, d: Logger(d, progress=False),
            make_config(),
            tmp_path,
        )


class LocalBatchEnv:
    """In-process stand-in for ``dreamer_tf.envs.parallel.BatchEnv``."""

    def __init__(self, env_fns, parallel="none", timeout=None):
        self.envs = [fn() for fn in env_fns]
        self.obs_space, self.act_space = self.envs[0].obs_space, self.envs[0].act_space

    def __len__(self):
        return len(self.envs)

    def step(self, actions):
        obs = [env.step({k: v[i] for k, v in actions.items()}) for i, env in enumerate(self.envs)]
        return {k: np.stack([o[k] for o in obs]) for k in obs[0]}

    def close(self):
        for env in self.envs:
            env.close()


@pytest.mark.parametrize("parts", ["real", "local"])
def test_random_agent_on_the_dummy_env(tmp_path, parts):
    """RandomAgent and ``dummy_disc`` through the loop, with the real BatchEnv and Replay when present."""
    from dreamer_tf import envs
    from dreamer_tf.random_agent import RandomAgent

    if parts == "real":
        parallel = pytest.importorskip("dreamer_tf.envs.parallel", reason="BatchEnv not written yet")
        replay_module = pytest.importorskip("dreamer_tf.run.replay", reason="Replay not written yet")
        batch_env, make_replay = (
            parallel.BatchEnv,
            lambda c: replay_module.Replay(
                c.batch_length + c.replay_context, int(c.replay.size), online=c.replay.online, seed=c.seed
            ),
        )
    else:
        batch_env, make_replay = LocalBatchEnv, lambda c: FakeReplay(c.batch_length + c.replay_context)
    config = make_config(**{"run.steps": 300, "env.dummy.size": (16, 16), "env.dummy.length": 20})

    def make_envs(config, mode="train"):
        count = config.run.envs if mode == "train" else config.run.eval_envs
        return batch_env([lambda: envs.make("dummy_disc", config) for _ in range(count)], parallel="none")

    status = loop.train(
        RandomAgent, make_replay, make_envs, lambda c, d: Logger(d, progress=False), config, tmp_path
    )
    assert status == "done"
    scores = read_jsonl(tmp_path / "scores.jsonl")
    # Reward 1 on every step after the first; episodes of 20 steps plus the reset observation.
    assert scores and all(row["episode/score"] == 20 and row["episode/length"] == 21 for row in scores)
    assert len(scores) == 2 * (150 // 21)  # two envs, 150 observations each
    assert Checkpoint(tmp_path / "checkpoint").load()["loop"]["env_steps"] == 300


class OnPolicyAgent(CountingAgent):
    """Collects ``length`` steps per env, then 'updates' with 3 gradient steps (like PPO, no replay)."""

    on_policy = True

    def __init__(self, obs_space, act_space, config, length: int = 5):
        super().__init__(obs_space, act_space, config)
        self.length, self.steps, self.seen, self.update_calls = length, [], [], 0

    def observe(self, transitions):
        self.steps.append(transitions)
        self.seen.append(transitions)

    def ready(self):
        return len(self.steps) == self.length

    def update(self):
        self.update_calls += 1
        self.steps = []
        return {"loss/policy": 1.0, "entropy": 0.5}, 3

    def train(self, batch):
        raise AssertionError("an on-policy agent is never given replayed batches")

    def save(self):
        return {"update_calls": self.update_calls}

    def load(self, state):
        self.update_calls = int(state["update_calls"])


def run_on_policy(logdir, config):
    agents = []

    def make_agent(obs_space, act_space, config):
        agents.append(OnPolicyAgent(obs_space, act_space, config))
        return agents[-1]

    def make_replay(config):
        raise AssertionError("no replay buffer for an on-policy agent")

    def make_envs(config, mode="train"):
        return FakeEnvs(config.run.envs)

    def make_logger(config, logdir):
        return Logger(logdir, config.run.steps, progress=False)

    status = loop.train(make_agent, make_replay, make_envs, make_logger, config, logdir)
    return status, agents[0]


def test_on_policy_agents_get_rollouts_not_replay(tmp_path):
    config = make_config(**{"run.steps": 100})
    status, agent = run_on_policy(tmp_path, config)
    assert status == "done"
    # 2 envs: 50 loop steps, an update after every 5 observed steps.
    assert len(agent.seen) == 50 and agent.update_calls == 10
    step = agent.seen[0]
    assert set(step) == {"vector", "reward", "is_first", "is_last", "is_terminal", "action", "latent"}
    assert all(len(value) == 2 for value in step.values())
    for step in agent.seen:  # actions after the last step are zeros here too
        np.testing.assert_array_equal(step["action"], np.where(step["is_last"], 0, 1))
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert metrics[-1]["counter/updates"] == 30  # gradient steps, 3 per update
    keys = set().union(*metrics)
    assert {"train/loss/policy", "train/entropy"} <= keys
    assert not any(key.startswith("replay/") for key in keys)
    assert not (tmp_path / "checkpoint" / "latest" / "replay").exists()
    # Resume: the agent's own state and the counters come back; the run continues to 200 steps.
    status, agent = run_on_policy(tmp_path, make_config(**{"run.steps": 200}))
    assert status == "done" and agent.update_calls == 20
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["counter/updates"] == 60


def fake_weights(self):
    """Weights to draw, as the Keras agents' ``weights()`` gives them."""
    return {"encoder/dense/kernel": np.arange(6.0).reshape(2, 3)}


@pytest.mark.backend_independent
def test_the_loop_draws_histograms_of_actions_returns_and_weights(tmp_path, monkeypatch):
    from tensorboardX.proto.event_pb2 import Event

    from dreamer_tf.run.metrics import _records

    monkeypatch.setattr(CountingAgent, "weights", fake_weights, raising=False)
    status, _, _ = run_fake(tmp_path, make_config(**{"run.steps": 100, "run.log_every": 0.0}))
    assert status == "done"
    histograms: dict[str, list] = {}
    for path in tmp_path.glob("events.out.tfevents.*"):
        for record in _records(path.read_bytes()):
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.WhichOneof("value") == "histo":
                    histograms.setdefault(value.tag, []).append(value.histo)
    assert sum(h.num for h in histograms["actions/action"]) == 100  # every action taken, once
    assert all(h.min == h.max == 1 for h in histograms["actions/action"])  # the fake always acts 1
    assert sum(h.num for h in histograms["episode/returns"]) == 100 // EPISODE
    # Weights: at the first write and at the end, not at every write.
    assert [h.num for h in histograms["weights/encoder/dense/kernel"]] == [6, 6]
