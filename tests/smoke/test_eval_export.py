"""A finished tiny DreamerV3 run evaluated and exported through the CLI, on the session's backend.

The export is loaded in a fresh process that imports only TensorFlow and NumPy; its actions and
carry must match the agent's own policy on the same observations and noise. A run trained on JAX
exports too (the command reruns itself on TensorFlow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.run.metrics import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(tempfile.gettempdir()) / "dreamer_tf-test-jax-cache"
STEPS = 24
FLAGS = [
    "--configs", "debug", "--env.dummy.image", "false", "--env.dummy.length", "5",
    "--run.progress", "false", "--run.envs", "1", "--run.train_fill", "8", "--run.train_ratio", "4",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The training, evaluation and export processes compile the same policy step on JAX.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE))
    return env


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _train(tmp_path_factory, task: str) -> Path:
    logdir = tmp_path_factory.mktemp(task) / "run"
    result = _run(
        "-m", "dreamer_tf", "--task", task, "--logdir", str(logdir), "--run.steps", str(STEPS), *FLAGS
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir


@pytest.fixture(scope="module")
def disc_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "dummy_disc")


@pytest.fixture(scope="module")
def cont_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "dummy_cont")


def test_eval_sample_and_greedy(disc_run):
    from dreamer_tf.run.evaluate import evaluate

    finished_run = disc_run
    result = _run("-m", "dreamer_tf.eval", "--logdir", str(finished_run), "--episodes", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(sample, seed 0): 3 episodes" in result.stdout
    summary = evaluate(finished_run, episodes=2, envs=2, mode="greedy", seed=5)
    assert (summary["mode"], summary["episodes"], summary["seed"]) == ("greedy", 2, 5)
    rows = read_jsonl(finished_run / "eval.jsonl")
    episodes = [r for r in rows if r["kind"] == "episode"]
    summaries = [r for r in rows if r["kind"] == "summary"]
    assert [r["mode"] for r in episodes] == ["sample"] * 3 + ["greedy"] * 2
    assert [r["env"] for r in episodes[3:]] == [0, 1]  # each environment plays its share
    assert [(s["mode"], s["episodes"], s["env_step"]) for s in summaries] == [
        ("sample", 3, STEPS),
        ("greedy", 2, STEPS),
    ]
    assert all(r["length"] == 6 for r in episodes)  # env.dummy.length 5 plus the reset step


def _reference(logdir: Path, spec: dict, inputs: dict, greedy: bool) -> dict[str, np.ndarray]:
    """The agent's own policy (this process's backend) on the export's inputs and noise."""
    from dreamer_tf import envs
    from dreamer_tf.run.evaluate import load_checkpoint, load_run_config
    from dreamer_tf.run.train import resolve_agent

    config = load_run_config(logdir).update({"compile.precision": "float32"})
    _, state = load_checkpoint(logdir)
    env = envs.make(config.task, config)
    agent = resolve_agent(config.agent_name)(env.obs_space, env.act_space, config)
    env.close()
    agent.load(state["agent"])
    carry = agent.init_policy(len(inputs["0/is_first"]))
    out = {}
    for t in range(len({k.split("/")[0] for k in inputs})):
        obs = {key: inputs[f"{t}/{name}"] for name, key in spec["observations"].items()}
        obs.update({k: inputs[f"{t}/{k}"] for k in ("is_first", "is_last", "is_terminal", "reward")})
        noise = (inputs[f"{t}/stoch_noise"], inputs[f"{t}/action_noise"])
        actions, carry, _ = agent.policy(obs, carry, "greedy" if greedy else "eval", noise=noise)
        out.update({f"{t}/{name}": actions[info["key"]] for name, info in spec["actions"].items()})
        out.update({f"{t}/{name}": value for name, value in zip(spec["carry"]["names"], carry)})
    return out


def _inputs(logdir: Path, spec: dict, steps: int = 8, batch: int = 2) -> dict[str, np.ndarray]:
    """Observations of ``batch`` dummy environments over ``steps`` steps (an episode boundary
    included), and Gumbel / normal noise drawn as policy.json says."""
    from dreamer_tf import envs
    from dreamer_tf.run.evaluate import load_run_config
    from dreamer_tf.spaces import random_actions

    config = load_run_config(logdir)
    rng = np.random.default_rng(1)
    envs_ = [envs.make(config.task, config.update({"seed": i})) for i in range(batch)]
    act_space = {k: v for k, v in envs_[0].act_space.items() if k != "reset"}
    inputs = {}
    reset = True
    for t in range(steps):
        acts = random_actions(act_space, batch, rng)
        obs = [
            env.step({"reset": reset, **{k: v[i] for k, v in acts.items()}}) for i, env in enumerate(envs_)
        ]
        reset = bool(obs[0]["is_last"])
        for key in obs[0]:
            stacked = np.stack([o[key] for o in obs])
            name = next((n for n, k in spec["observations"].items() if k == key), key)
            inputs[f"{t}/{name}"] = stacked
        shape = spec["inputs"]["stoch_noise"]["shape"][1:]
        uniform = rng.uniform(1e-6, 1 - 1e-6, (batch, *shape))
        inputs[f"{t}/stoch_noise"] = (-np.log(-np.log(uniform))).astype(np.float32)
        parts = []
        for part in spec["noise"]["action_noise"]:
            size = part["slice"][1] - part["slice"][0]
            if part["distribution"] == "gumbel":
                parts.append(-np.log(-np.log(rng.uniform(1e-6, 1 - 1e-6, (batch, size)))))
            else:
                parts.append(rng.normal(size=(batch, size)))
        inputs[f"{t}/action_noise"] = np.concatenate(parts, -1).astype(np.float32)
    for env in envs_:
        env.close()
    assert inputs["1/is_first"].sum() == 0 and any(inputs[f"{t}/is_first"].all() for t in range(2, steps))
    return inputs


@pytest.mark.parametrize("run", ["disc_run", "cont_run"])
def test_export_loads_without_dreamer_tf_and_acts_like_the_agent(run, tmp_path, request):
    from dreamer_tf.run.export import main as export

    finished_run = request.getfixturevalue(run)
    out = tmp_path / "export"
    # In this process on TensorFlow; on JAX the command reruns itself with KERAS_BACKEND=tensorflow.
    assert export(["--logdir", str(finished_run), "--out", str(out)]) == 0
    spec = json.loads((out / "policy.json").read_text())
    assert spec["env_step"] == STEPS and (out / "README.txt").read_text().startswith("DreamerV3 policy")
    inputs = _inputs(finished_run, spec)
    np.savez(tmp_path / "inputs.npz", **inputs)
    # -I: no PYTHONPATH and no current folder on the path; the script refuses to import dreamer_tf.
    script = str(ROOT / "tests/helpers/saved_policy.py")
    loaded = _run("-I", script, str(out), str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"))
    assert loaded.returncode == 0 and "ok" in loaded.stdout, loaded.stderr[-3000:]
    exported = dict(np.load(tmp_path / "outputs.npz"))
    for signature, greedy in (("serving_default", False), ("policy_greedy", True)):
        reference = _reference(finished_run, spec, inputs, greedy)
        ours = {k[len(signature) + 1 :]: v for k, v in exported.items() if k.startswith(signature + "/")}
        assert sorted(ours) == sorted(reference)
        for key, value in reference.items():
            assert ours[key].dtype == value.dtype, (key, ours[key].dtype, value.dtype)
            np.testing.assert_allclose(ours[key], value, rtol=1e-4, atol=1e-5, err_msg=f"{signature} {key}")
    # The sampled actions follow the noise: somewhere they differ from the greedy ones.
    actions = [k for k in exported if k.startswith("serving_default/") and "/action_" in k]
    assert any(
        not np.array_equal(exported[k], exported["policy_greedy" + k[len("serving_default") :]])
        for k in actions
    )
