"""The DreamerV3 agent end to end on tiny networks: shapes, stop-gradients, learning, determinism, checkpoints."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.dreamerv3.agent import Agent
from dreamer_tf.spaces import Space

RESERVED = {
    "reward": Space(np.float32),
    "is_first": Space(bool),
    "is_last": Space(bool),
    "is_terminal": Space(bool),
}
OBS_SPACES = {
    "vector": {"vector": Space(np.float32, (5,)), **RESERVED},
    "image": {"image": Space(np.uint8, (64, 64, 3)), **RESERVED},
    "mixed": {
        "image": Space(np.uint8, (64, 64, 3)),
        "vector": Space(np.float32, (7,)),
        "float2d": Space(np.float32, (4, 5)),
        **RESERVED,
    },
}
DISCRETE = Space(np.int32, (), 0, 3)
CONTINUOUS = Space(np.float32, (2,), -1.0, 1.0)
ACT_SPACES = {
    "vector": {"action": CONTINUOUS},
    "image": {"action": DISCRETE},
    "mixed": {"move": Space(np.int32, (), 0, 4), "aim": CONTINUOUS},
}
WM_LOSSES = {"dyn", "rep", "rew", "con"}
AC_LOSSES = {"policy", "value", "repval"}


def make_agent(kind: str, *overrides: str, presets=("debug",), act_space=None) -> Agent:
    config = load_config(list(presets), list(overrides))
    return Agent(OBS_SPACES[kind], act_space or ACT_SPACES[kind], config)


def make_obs(obs_space: dict, n: int, rng: np.random.Generator, first: bool = False) -> dict:
    obs = {}
    for key, space in obs_space.items():
        if key == "is_first":
            obs[key] = np.full(n, first)
        elif space.dtype == np.bool_:
            obs[key] = np.zeros(n, bool)
        elif space.dtype == np.uint8:
            obs[key] = rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
        else:
            obs[key] = rng.normal(size=(n, *space.shape)).astype(space.dtype)
    return obs


def make_batch(agent: Agent, seed: int = 0) -> dict:
    """A replayed batch (B, C + T, ...) with random episode boundaries and stored latents."""
    rng = np.random.default_rng(seed)
    config = agent.config
    B, T = config.batch_size, config.batch_length + config.replay_context
    dyn = config.agent.dyn
    batch = {}
    for key, space in agent.obs_space.items():
        if space.dtype == np.uint8:
            batch[key] = rng.integers(0, 256, (B, T, *space.shape), dtype=np.uint8)
        elif space.dtype != np.bool_:
            batch[key] = rng.normal(size=(B, T, *space.shape)).astype(space.dtype)
    batch["is_first"] = rng.random((B, T)) < 0.1
    batch["is_last"] = np.roll(batch["is_first"], -1, axis=1)
    batch["is_terminal"] = batch["is_last"] & (rng.random((B, T)) < 0.5)
    for key, space in agent.act_space.items():
        if space.discrete:
            batch[key] = rng.integers(0, space.classes, (B, T)).astype(space.dtype)
        else:
            batch[key] = rng.uniform(-1, 1, (B, T, *space.shape)).astype(space.dtype)
    batch["dyn/deter"] = rng.normal(size=(B, T, dyn.deter)).astype(np.float32)
    batch["dyn/stoch"] = rng.integers(0, dyn.classes, (B, T, dyn.stoch)).astype(np.int32)
    batch["stepid"] = np.arange(B * T, dtype=np.int64).reshape(B, T) + 1000 * seed
    return batch


def expected_loss_keys(kind: str) -> set[str]:
    observed = {k for k in OBS_SPACES[kind] if k not in RESERVED}
    return {f"loss/{k}" for k in WM_LOSSES | AC_LOSSES | observed}


def check_actions(agent: Agent, actions: dict, n: int, bounded: bool = False) -> None:
    """Shapes, dtypes and ranges. Continuous samples may leave [-1, 1] (the environment clips them,
    as in the official agent); ``bounded``: they must not (the policy's mode, random actions)."""
    assert set(actions) == set(agent.act_space), (actions.keys(), agent.act_space)
    for key, space in agent.act_space.items():
        value = actions[key]
        assert value.shape == (n, *space.shape), (key, value.shape)
        assert value.dtype == space.dtype, (key, value.dtype, space.dtype)
        if space.discrete:
            assert np.all((value >= 0) & (value < space.classes)), (key, value)
        else:
            assert np.all(np.isfinite(value)), (key, value)
            assert not bounded or np.all(np.abs(value) <= 1.0), (key, value)


@pytest.fixture(scope="module")
def agents():
    """Agents per observation kind, built once and shared by the tests of this module."""
    cache: dict[str, Agent] = {}

    def get(kind: str) -> Agent:
        if kind not in cache:
            cache[kind] = make_agent(kind)
        return cache[kind]

    return get


# ---------------------------------------------------------------- shapes and finite losses


@pytest.mark.parametrize("kind", ["vector", "image", "mixed"])
def test_policy_and_train_shapes(agents, kind):
    agent = agents(kind)
    rng = np.random.default_rng(1)
    n = 3
    dyn = agent.config.agent.dyn
    state = agent.init_policy(n)
    for step in range(2):
        actions, state, extra = agent.policy(make_obs(agent.obs_space, n, rng, first=step == 0), state)
        check_actions(agent, actions, n)
        assert extra["dyn/deter"].shape == (n, dyn.deter) and extra["dyn/stoch"].shape == (n, dyn.stoch)
        assert np.all(np.isfinite(extra["dyn/deter"]))
        assert np.all((extra["dyn/stoch"] >= 0) & (extra["dyn/stoch"] < dyn.classes))
    random_actions, _, _ = agent.policy(make_obs(agent.obs_space, n, rng), state, mode="random")
    check_actions(agent, random_actions, n, bounded=True)

    batch = make_batch(agent)
    metrics, updates = agent.train(batch)
    missing = expected_loss_keys(kind) - set(metrics)
    assert not missing, f"metrics lack {sorted(missing)}: {sorted(metrics)}"
    bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
    assert not bad, bad
    B, T = agent.config.batch_size, agent.config.batch_length
    assert updates["stepid"].shape == (B, T)
    np.testing.assert_array_equal(updates["stepid"], batch["stepid"][:, agent.config.replay_context :])
    assert updates["dyn/deter"].shape == (B, T, dyn.deter) and updates["dyn/deter"].dtype == np.float32
    assert updates["dyn/stoch"].shape == (B, T, dyn.stoch)
    assert np.all((updates["dyn/stoch"] >= 0) & (updates["dyn/stoch"] < dyn.classes))
    assert metrics["opt/updates"] == 1.0


def test_continuous_samples_leave_the_agent_unclipped(agents):
    # As in the official agent: the environment clips (envs.wrappers.ClipAction), while the replay,
    # the RSSM's previous action and the actor's log-probabilities see the Gaussian sample itself.
    # The initial policy (mean about 0, std about 0.89) puts about a quarter of its samples past ±1.
    agent = agents("vector")
    n = 256
    actions, state, _ = agent.policy(
        make_obs(agent.obs_space, n, np.random.default_rng(2), True), agent.init_policy(n)
    )
    value = actions["action"]
    assert np.all(np.isfinite(value))
    assert 0.1 < np.mean(np.abs(value) > 1.0) < 0.5, np.mean(np.abs(value) > 1.0)
    np.testing.assert_array_equal(np.asarray(state[2]), value)


# ---------------------------------------------------------------- bad input


def test_bad_observations_raise_naming_the_key(agents):
    agent = agents("mixed")
    rng = np.random.default_rng(2)
    state = agent.init_policy(2)
    obs = make_obs(agent.obs_space, 2, rng)
    obs["vector"] = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="'vector'"):
        agent.policy(obs, state)
    obs = make_obs(agent.obs_space, 2, rng)
    obs["image"] = obs["image"].astype(np.float32)
    with pytest.raises(ValueError, match="'image'"):
        agent.policy(obs, state)
    obs = make_obs(agent.obs_space, 2, rng)
    obs["float2d"] = np.zeros((2, 5, 4), np.float32)
    with pytest.raises(ValueError, match="'float2d'"):
        agent.policy(obs, state)
    batch = make_batch(agent)
    del batch["aim"]
    with pytest.raises(ValueError, match="aim"):
        agent.train(batch)


def test_bad_spaces_and_precision_raise():
    with pytest.raises(ValueError, match="'action'.*\\[-1, 1\\]"):
        make_agent("vector", act_space={"action": Space(np.float32, (2,), -2.0, 2.0)})
    with pytest.raises(ValueError, match="float8"):
        make_agent("vector", "--compile.precision", "float8")


def test_xla_on_tensorflow_asks_for_unrolled_loops():
    # TensorFlow's XLA cannot compile the gradient of a while loop; without this check the first
    # train step failed deep inside tf2xla.
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match=r"--compile.unroll true"):
            make_agent("vector", "--compile.xla", "true")
    agent = make_agent("vector", "--compile.xla", "true", "--compile.unroll", "true")  # JAX ignores xla
    metrics, _ = agent.train(make_batch(agent))
    assert np.isfinite(metrics["opt/loss"])


# ---------------------------------------------------------------- stop-gradients


def variable_ids(*layers) -> set[int]:
    return {id(v) for layer in layers for v in layer.trainable_variables}


def loss_gradients(model, data: dict, names: list[str]) -> dict[str, list[np.ndarray]]:
    """Gradient of each named metric of ``model.train_loss`` w.r.t. every trainable variable (zeros if cut)."""
    variables = list(model.trainable_variables)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            _, (metrics, _) = model.train_loss(data)
        grads = {}
        for name in names:
            grads[name] = [
                np.zeros(v.shape, np.float32) if g is None else np.asarray(tf.convert_to_tensor(g))
                for v, g in zip(variables, tape.gradient(metrics[name], variables))
            ]
        return grads
    if keras.backend.backend() == "jax":
        import jax

        others = list(model.non_trainable_variables)
        other_values = [v.value for v in others]

        def losses(values):
            mapping = list(zip(variables, values)) + list(zip(others, other_values))
            with keras.StatelessScope(state_mapping=mapping):
                _, (metrics, _) = model.train_loss(data)
            return keras.ops.stack([metrics[name] for name in names])

        jacobian = jax.jit(jax.jacrev(losses))([v.value for v in variables])
        return {name: [np.asarray(j[i]) for j in jacobian] for i, name in enumerate(names)}
    pytest.skip(f"no autodiff helper for backend {keras.backend.backend()}")


def test_stop_gradients_separate_world_model_actor_and_critic():
    # One replayed step (T = 1): its state starts from the stored latent, so the dyn loss can only
    # reach the posterior through the prior's input. With T > 1 the dyn loss at t also reaches the
    # posterior of t − 1 through the straight-through sample z_{t−1}, as in the official code.
    # The replay value loss needs two steps for a λ-return, so it is off here.
    agent = make_agent(
        "vector", "--batch_length", "1", "--agent.dyn.free_nats", "0", "--agent.repval_loss", "false"
    )
    model = agent.model
    wm, ac, rssm = model.wm, model.ac, model.wm.rssm
    # The reward and critic output layers start at zero, which hides every path through them.
    rng = np.random.default_rng(3)
    for layer in (wm.reward.out, ac.value.out):
        for variable in layer.trainable_variables:
            variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.1)
    agent.runner.reload()
    data = make_batch(agent, seed=3)
    data["is_first"][:] = False
    names = ["loss/policy", "loss/value", "loss/dyn", "loss/rep", "loss/rew", "loss/con", "loss/vector"]
    grads = loss_gradients(model, data, names)
    variables = list(model.trainable_variables)

    groups = {
        "world model": variable_ids(wm),
        "encoder": variable_ids(wm.encoder),
        "posterior": variable_ids(*rssm.obs_layers, rssm.obs_logit),
        "prior": variable_ids(*rssm.img_layers, rssm.img_logit),
        "core": variable_ids(rssm.dynin0, rssm.dynin1, rssm.dynin2, *rssm.dynhid, rssm.gru),
        "decoder": variable_ids(wm.decoder),
        "reward": variable_ids(wm.reward),
        "continue": variable_ids(wm.cont),
        "actor": variable_ids(*ac.actor.values()),
        "critic": variable_ids(ac.value),
    }
    assert all(groups.values()), {k: len(v) for k, v in groups.items()}

    def magnitude(loss: str, group: str) -> float:
        ids = groups[group]
        return max(float(np.abs(g).max()) for v, g in zip(variables, grads[loss]) if id(v) in ids)

    reaches = {
        "loss/policy": {"actor"},
        "loss/value": {"critic"},
        "loss/dyn": {"prior", "core"},
        "loss/rep": {"posterior", "encoder", "core"},
        "loss/rew": {"reward", "encoder", "posterior"},
        "loss/con": {"continue", "encoder", "posterior"},
        "loss/vector": {"decoder", "encoder", "posterior"},
    }
    blocked = {
        "loss/policy": {"world model", "critic"},
        "loss/value": {"world model", "actor"},
        "loss/dyn": {"posterior", "encoder", "decoder", "reward", "continue", "actor", "critic"},
        "loss/rep": {"prior", "decoder", "reward", "continue", "actor", "critic"},
        "loss/rew": {"prior", "decoder", "continue", "actor", "critic"},
        "loss/con": {"prior", "decoder", "reward", "actor", "critic"},
        "loss/vector": {"prior", "reward", "continue", "actor", "critic"},
    }
    for loss in names:
        for group in reaches[loss]:
            assert magnitude(loss, group) > 0.0, f"{loss} does not reach the {group}"
        for group in blocked[loss]:
            assert magnitude(loss, group) == 0.0, f"{loss} leaks into the {group}: {magnitude(loss, group)}"


# ---------------------------------------------------------------- learning, determinism, checkpoints


@pytest.fixture(scope="module")
def vector_agents():
    """Three agents of one config: two with seed 0, one with seed 5 (the checkpoint target)."""
    overrides = ("--agent.opt.lr", "1e-3", "--agent.opt.warmup", "0")
    first = make_agent("vector", *overrides, act_space={"action": DISCRETE})
    second = make_agent("vector", *overrides, act_space={"action": DISCRETE})
    other = make_agent("vector", *overrides, "--seed", "5", act_space={"action": DISCRETE})
    return first, second, other


def wm_loss(metrics: dict) -> float:
    return sum(metrics[f"loss/{k}"] for k in ("vector", "rew", "con", "dyn", "rep"))


def test_a_train_step_repeats_exactly_on_the_same_state(vector_agents):
    # Regression: on TensorFlow the optimizer's in-place writes were ordered after the variable
    # reads of the forward pass but not after the reads' consumers, so the continue and reward
    # heads on imagined states (which no gradient depends on) now and then saw a half-updated
    # weight: the same step on the same state changed the imagined metrics in 2 of 40 to 18 of 60
    # tries on the 2-core CPU. The step now waits for the forward pass before it writes.
    agent = vector_agents[2]
    state = agent.save()
    batch = make_batch(agent, seed=9)
    reference, _ = agent.train(batch)
    for _ in range(150):  # about 0.15 s each on the 2-core CPU
        agent.load(state)
        metrics, _ = agent.train(batch)
        assert metrics == reference, sorted(k for k in metrics if metrics[k] != reference[k])
    agent.load(state)


# The traced train step of the `mixed` agent, hashed, in a fresh process (argv: none).
TRACE_SCRIPT = """
import hashlib
import keras
from tests.component.test_agent import make_agent, make_batch

agent = make_agent("mixed")
data = agent.train_inputs(make_batch(agent, seed=0))
runner = agent.runner
if keras.backend.backend() == "jax":
    import jax

    text = jax.jit(runner._train_step).lower(runner.state, data).as_text()
else:
    graph = runner._train.get_concrete_function(data).graph.as_graph_def()
    text = "\\n".join(f"{{n.name}} {{n.op}} {{list(n.input)}}" for n in graph.node)
print("program", hashlib.sha256(text.encode()).hexdigest())
"""


def test_the_traced_train_step_does_not_depend_on_string_hashing():
    # Regression: the model kept its observation keys in a set, whose order follows Python's
    # per-process string hashing, so each process traced the ops in another order. The program
    # is the same maths either way, but JAX's persistent compilation cache is keyed on its text
    # and so never hit across processes (each resumed chunk compiled again).
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = TRACE_SCRIPT.format()
    root = str(Path(__file__).resolve().parents[2])  # the checkout, so that `tests` imports
    hashes = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": root}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        hashes.append([line for line in result.stdout.splitlines() if line.startswith("program")])
    assert hashes[0] and hashes[0] == hashes[1]


def test_same_seed_gives_identical_results(vector_agents):
    first, second, _ = vector_agents
    rng = np.random.default_rng(4)
    obs = make_obs(first.obs_space, 3, rng, first=True)
    out1 = first.policy(obs, first.init_policy(3))
    out2 = second.policy(obs, second.init_policy(3))
    np.testing.assert_array_equal(out1[0]["action"], out2[0]["action"])
    for a, b in zip(out1[1], out2[1]):
        np.testing.assert_array_equal(a, b)
    batch = make_batch(first, seed=5)
    for _ in range(3):
        metrics1, updates1 = first.train(batch)
        metrics2, updates2 = second.train(batch)
        assert metrics1 == metrics2
        np.testing.assert_array_equal(updates1["dyn/deter"], updates2["dyn/deter"])
    out1 = first.policy(obs, out1[1])
    out2 = second.policy(obs, out2[1])
    np.testing.assert_array_equal(out1[0]["action"], out2[0]["action"])
    np.testing.assert_array_equal(out1[2]["dyn/deter"], out2[2]["dyn/deter"])


def test_checkpoint_round_trip(vector_agents):
    source, _, target = vector_agents
    batch = make_batch(source, seed=6)
    source.train(batch)
    state = pickle.loads(pickle.dumps(source.save()))
    target.load(state)
    rng = np.random.default_rng(7)
    obs = make_obs(source.obs_space, 4, rng, first=True)
    out_source = source.policy(obs, source.init_policy(4))
    out_target = target.policy(obs, target.init_policy(4))
    np.testing.assert_array_equal(out_source[0]["action"], out_target[0]["action"])
    for a, b in zip(out_source[1], out_target[1]):
        np.testing.assert_array_equal(a, b)
    metrics_source, _ = source.train(batch)
    metrics_target, _ = target.train(batch)
    assert metrics_source == metrics_target
    random_source = source.policy(obs, out_source[1], mode="random")[0]["action"]
    random_target = target.policy(obs, out_target[1], mode="random")[0]["action"]
    np.testing.assert_array_equal(random_source, random_target)


def test_checkpoint_from_another_config_raises(vector_agents):
    source = vector_agents[0]
    other = make_agent("vector", "--agent.dyn.deter", "16", act_space={"action": DISCRETE})
    with pytest.raises(ValueError, match="different config"):
        other.load(source.save())


def test_world_model_overfits_one_batch():
    # A fresh agent of the fixture's config: the shared ones carry whatever the tests before them
    # trained, which under xdist depends on the order (its starting loss then varied 3.2 to 3.5).
    agent = make_agent(
        "vector", "--agent.opt.lr", "1e-3", "--agent.opt.warmup", "0", act_space={"action": DISCRETE}
    )
    batch = make_batch(agent, seed=8)
    first, _ = agent.train(batch)
    for _ in range(100):
        metrics, _ = agent.train(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    print(f"world-model loss {wm_loss(first):.3f} -> {wm_loss(metrics):.3f}; "
          f"vector {first['loss/vector']:.3f} -> {metrics['loss/vector']:.3f}")  # fmt: skip
    assert wm_loss(metrics) < 0.8 * wm_loss(first), (first, metrics)
    assert metrics["loss/vector"] < 0.6 * first["loss/vector"], (first["loss/vector"], metrics["loss/vector"])


# ---------------------------------------------------------------- sizes and precision


def test_parameter_counts_per_preset():
    obs_space = {
        "image": Space(np.uint8, (64, 64, 3)),
        "vector": Space(np.float32, (7,)),
        "float2d": Space(np.float32, (4, 5)),
        **RESERVED,
    }
    act_space = {"action": Space(np.int32, (), 0, 5)}
    counts = {}
    for preset in ("size1m", "size12m", "size25m"):
        agent = Agent(obs_space, act_space, load_config([preset], ["--compile.jit", "false"]))
        counts[preset] = agent.param_count
        print(f"{preset}: {agent.param_summary()}")
        del agent
    assert counts["size1m"] < counts["size12m"] < counts["size25m"], counts
    assert 9e6 <= counts["size12m"] <= 15e6, counts
    assert 0.5e6 <= counts["size1m"] <= 3e6, counts


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_trains(precision):
    agent = make_agent("vector", "--compile.precision", precision, act_space={"action": DISCRETE})
    assert agent.precision == precision
    assert all(v.dtype == "float32" for v in agent.model.trainable_variables)
    batch = make_batch(agent, seed=9)
    # float16's dynamic loss scale starts at 2^15 and halves on every step whose gradients overflow
    # (that step is skipped); the losses themselves are finite from the first step.
    for _ in range(20):
        metrics, updates = agent.train(batch)
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v) and not k.startswith("opt/grad")}
        assert not bad, bad
        assert np.all(np.isfinite(updates["dyn/deter"]))
        if np.isfinite(metrics["opt/grad_norm"]):
            break
    assert np.isfinite(metrics["opt/grad_norm"]) and metrics["opt/grad_norm"] > 0, metrics
    # The optimizer saw unscaled gradients once: its second moment is (1 − β2) g² of the finite step
    # (at most, as AGC may shrink g), not ~1e-9 times that as when divided by the loss scale twice.
    agent.runner.sync()
    velocity = sum(
        float(keras.ops.convert_to_numpy(keras.ops.sum(v)))
        for v in agent.optimizer.variables if "velocity" in v.path
    )  # fmt: skip
    ratio = velocity / (1e-3 * metrics["opt/grad_norm"] ** 2)
    print(f"{precision}: second moment / (1 - beta2) g^2 = {ratio:.3g}")
    assert 1e-6 < ratio <= 1.0 + 1e-3, ratio
    actions, _, _ = agent.policy(
        make_obs(agent.obs_space, 2, np.random.default_rng(0), True), agent.init_policy(2)
    )
    check_actions(agent, actions, 2)


def test_actor_learning_rate_multiplier_reaches_only_the_policy():
    # By identity: Keras paths repeat across layers (every MLP has a ``linear/kernel``), and an
    # earlier version that matched by path also slowed the critic's and the world model's MLPs.
    agent = make_agent("mixed", "--agent.opt.actor", "0.25")
    actor = {id(v) for head in agent.model.ac.actor.values() for v in head.trainable_variables}
    variables = agent.model.trainable_variables
    assert actor and len(actor) < len(variables)
    assert len(agent.optimizer._mult) == len(variables)
    for var, mult in zip(variables, agent.optimizer._mult):
        assert mult == (0.25 if id(var) in actor else 1.0), (var.path, mult)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX keeps a program per operation run eagerly")
def test_releasing_the_build_memory_frees_the_programs_building_compiled_and_the_agent_still_trains():
    from dreamer_tf import backend

    agent = make_agent("vector")
    before = resident_mb()
    backend.release_build_memory()
    # Building even a debug agent compiles about 100 MB of small programs (measured: 466 -> 357 MB).
    assert before - resident_mb() > 40, (before, resident_mb())
    metrics, _ = agent.train(make_batch(agent))
    assert all(np.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the ahead-of-time compiled step is JAX's")
def test_the_jax_train_step_is_scheduled_for_memory_and_a_large_one_maps_its_buffers(monkeypatch):
    from dreamer_tf import allocator

    mapped = []
    monkeypatch.setattr(allocator, "map_large_buffers", lambda: mapped.append(1) or True)
    monkeypatch.setattr(allocator, "KEEP_LIMIT", 1 << 40)
    agent = make_agent("image")
    batch = make_batch(agent)
    agent.train(batch)
    (compiled,) = agent.runner._compiled.values()
    default = agent.runner._train.lower(agent.runner.state, agent.train_inputs(batch)).compile()
    temp = lambda program: program.memory_analysis().temp_size_in_bytes  # noqa: E731
    # The debug image agent: 16.7 against 24.2 MB (the numbers are the same: the test below).
    assert temp(compiled) < 0.85 * temp(default), (temp(compiled), temp(default))
    assert not mapped
    # A step whose temporary buffer is above the limit has large allocations mapped afresh.
    monkeypatch.setattr(allocator, "KEEP_LIMIT", 0)
    agent.train({key: value[:, :-1] for key, value in batch.items()})
    assert mapped == [1]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the ahead-of-time compiled step is JAX's")
def test_the_jax_train_step_compiles_once_per_batch_shape_and_matches_jit(vector_agents):
    agent = vector_agents[2]
    runner = agent.runner
    state = agent.save()
    batch = make_batch(agent, seed=11)
    compiled = dict(runner._compiled)
    reference, _ = agent.train(batch)
    agent.train(batch)
    assert len(runner._compiled) == max(1, len(compiled))  # the same shapes: no second compile
    # jax.jit's own path on the same state gives the same numbers as the compiled step.
    agent.load(state)
    data = agent.train_inputs(batch)
    runner.state, (metrics, _) = runner._train(runner.state, data)
    for key, value in reference.items():
        if key != "opt/updates":
            assert float(metrics[key]) == value, key
    # Another batch length is another program.
    shorter = {k: v[:, :-1] for k, v in batch.items()}
    agent.train(shorter)
    assert len(runner._compiled) == max(1, len(compiled)) + 1
    agent.load(state)
