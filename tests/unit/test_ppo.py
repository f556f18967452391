"""PPO's math against naive references: GAE, the clipped objectives, log-probs and entropies,
plus the agent's checkpoint round trip and its error for unsupported action spaces."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_probability.substrates.numpy as tfp
from keras import ops

from dreamer_tf.config import load_config
from dreamer_tf.nn.distributions import Categorical
from dreamer_tf.ppo import losses
from dreamer_tf.ppo.advantages import ReturnNormalizer, gae
from dreamer_tf.ppo.agent import Agent
from dreamer_tf.spaces import Space
from tests.helpers.autodiff import gradient, value_and_gradient

tfd = tfp.distributions


# ---------------------------------------------------------------------- GAE


def naive_gae(reward, value, is_first, is_last, is_terminal, discount, lam):
    """Per environment: cut the stream into segments, then A_t = Σ_k (γλ)^k δ_{t+k} within each."""
    T = reward.shape[0] - 1
    advantage = np.zeros((T, reward.shape[1]))
    valid = np.zeros((T, reward.shape[1]))
    for env in range(reward.shape[1]):
        for t in range(T):
            if is_last[t, env] or is_first[t + 1, env]:
                continue  # no action was executed, or the next observation starts a new episode
            valid[t, env] = 1
            total, k = 0.0, 0
            while t + k < T:
                s = t + k
                if k > 0 and (is_last[s, env] or is_first[s + 1, env]):
                    break
                nxt = 0.0 if is_terminal[s + 1, env] else value[s + 1, env]
                delta = reward[s + 1, env] + discount * nxt - value[s, env]
                total += (discount * lam) ** k * delta
                if is_last[s + 1, env]:
                    break
                k += 1
            advantage[t, env] = total
    return advantage, advantage + value[:-1], valid


def test_gae_matches_a_plain_loop_with_terminations_truncations_and_starts():
    rng = np.random.default_rng(0)
    T, N = 12, 4
    reward = rng.normal(size=(T + 1, N))
    value = rng.normal(size=(T + 1, N))
    is_first = np.zeros((T + 1, N), bool)
    is_last = np.zeros((T + 1, N), bool)
    is_terminal = np.zeros((T + 1, N), bool)
    # env 0: terminates at 4, restarts at 5; env 1: truncated at 6, restarts at 7, truncated at the end;
    # env 2: no boundary; env 3: a restart without an is_last (a resumed run) at 3, terminal at 9.
    is_last[4, 0] = is_terminal[4, 0] = True
    is_first[[0, 5], 0] = True
    is_last[[6, 12], 1] = True
    is_first[7, 1] = True
    is_first[3, 3] = True
    is_last[9, 3] = is_terminal[9, 3] = True
    is_first[10, 3] = True
    for arr in (reward, value):
        arr[is_first] = arr[is_first] * (arr is value)  # is_first steps carry reward 0
    adv, ret, valid = gae(reward, value, is_first, is_last, is_terminal, 0.97, 0.9)
    ref_adv, ref_ret, ref_valid = naive_gae(reward, value, is_first, is_last, is_terminal, 0.97, 0.9)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
    # Hand checks: termination never bootstraps, truncation does.
    assert adv[3, 0] == pytest.approx(reward[4, 0] - value[3, 0], abs=1e-5)
    assert adv[5, 1] == pytest.approx(reward[6, 1] + 0.97 * value[6, 1] - value[5, 1], abs=1e-5)
    assert valid[4, 0] == 0 and valid[2, 3] == 0 and valid[6, 1] == 0


def test_gae_with_lambda_one_is_the_discounted_return_to_a_terminal():
    T = 5
    reward = np.array([0, 1, 2, 3, 4, 5], float)[:, None]
    value = np.full((T + 1, 1), 7.0)
    flags = np.zeros((T + 1, 1), bool)
    term = flags.copy()
    last = flags.copy()
    last[5] = term[5] = True
    _, ret, _ = gae(reward, value, flags, last, term, 0.5, 1.0)
    expected = [sum(0.5**k * reward[t + 1 + k, 0] for k in range(T - t)) for t in range(T)]
    np.testing.assert_allclose(ret[:, 0], expected, rtol=1e-6)


def test_return_normalizer_is_debiased_and_never_amplifies_small_returns():
    norm = ReturnNormalizer(rate=0.1, limit=1.0)
    returns = np.array([10.0, 30.0])
    norm.update(returns)
    assert norm.mean == pytest.approx(20.0) and norm.scale == pytest.approx(10.0)
    np.testing.assert_allclose(norm.denormalize(norm.normalize(returns)), returns, rtol=1e-6)
    small = ReturnNormalizer(rate=0.1, limit=1.0)
    small.update(np.array([0.1, 0.2]))
    assert small.scale == 1.0
    off = ReturnNormalizer(rate=0.1, limit=1.0, enabled=False)
    off.update(returns)
    assert off.mean == 0.0 and off.scale == 1.0


# ---------------------------------------------------------------------- objectives


@pytest.mark.parametrize(
    "ratio, advantage, moves",
    [
        (1.5, 1.0, False),  # above 1 + ε with a positive advantage: clipped, no gradient
        (0.5, -1.0, False),  # below 1 − ε with a negative advantage: clipped, no gradient
        (1.5, -1.0, True),  # above with a negative advantage: the unclipped term pulls back
        (0.5, 1.0, True),  # below with a positive advantage: the unclipped term pulls back
        (1.1, 1.0, True),  # inside the trust region: plain policy gradient
        (0.9, -1.0, True),
    ],
)
def test_clipped_surrogate_gradient(ratio, advantage, moves):
    old = np.array([-1.0], np.float32)
    logp = old + np.log(np.array([ratio], np.float32))
    loss, grad = value_and_gradient(
        lambda lp: ops.sum(losses.clipped_surrogate(lp, old, np.float32(advantage), 0.2)), logp
    )
    clipped = np.clip(ratio, 0.8, 1.2)
    assert loss == pytest.approx(-min(ratio * advantage, clipped * advantage), rel=1e-5)
    if moves:
        # d(−ρA)/d log π = −ρA: descent raises ρ for positive advantages, lowers it for negative ones.
        assert grad[0] == pytest.approx(-ratio * advantage, rel=1e-5)
    else:
        assert grad[0] == 0.0


def test_value_loss_clipping_is_pessimistic():
    old = np.array([0.0, 0.0, 0.0], np.float32)
    target = np.array([1.0, 1.0, -1.0], np.float32)
    value = np.array([0.5, 2.0, 0.1], np.float32)
    got = np.asarray(losses.value_loss(value, target, old, 0.2))
    clipped = np.clip(value - old, -0.2, 0.2) + old
    expected = 0.5 * np.maximum((value - target) ** 2, (clipped - target) ** 2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    grad = gradient(lambda v: ops.sum(losses.value_loss(v, target, old, 0.2)), value)
    assert grad[0] == 0.0  # moved past old + 0.2 towards the target: the clipped error dominates
    np.testing.assert_allclose(
        np.asarray(losses.value_loss(value, target, old, 0.0)), 0.5 * (value - target) ** 2
    )


def test_masked_advantage_normalisation_ignores_masked_entries():
    adv = np.array([1.0, 3.0, 100.0], np.float32)
    mask = np.array([1.0, 1.0, 0.0], np.float32)
    out = np.asarray(losses.normalize_advantages(adv, mask))
    np.testing.assert_allclose(out[:2], [-1.0, 1.0], rtol=1e-5)
    assert float(losses.masked_mean(adv, mask)) == pytest.approx(2.0)


def test_gaussian_log_prob_and_entropy_match_tfp():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(5, 3)).astype(np.float32)
    log_std = rng.normal(size=(3,)).astype(np.float32) * 0.5
    x = rng.normal(size=(5, 3)).astype(np.float32)
    dist = losses.Normal(mean, log_std)
    ref = tfd.Independent(tfd.Normal(mean, np.exp(log_std)), 1)
    np.testing.assert_allclose(np.asarray(dist.log_prob(x)), ref.log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dist.entropy()), ref.entropy(), rtol=1e-5)


def test_categorical_log_prob_and_entropy_match_tfp():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    index = rng.integers(0, 4, 6)
    dist = Categorical(logits)
    ref = tfd.Categorical(logits=logits)
    np.testing.assert_allclose(np.asarray(dist.log_prob(index)), ref.log_prob(index), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dist.entropy()), ref.entropy(), rtol=1e-5)


# ---------------------------------------------------------------------- the agent


def _spaces(kind: str):
    obs = {
        "vector": Space(np.float32, (3,)),
        "reward": Space(np.float32),
        "is_first": Space(bool),
        "is_last": Space(bool),
        "is_terminal": Space(bool),
    }
    if kind == "discrete":
        act = {"action": Space(np.int32, (), 1, 4)}
    else:
        act = {"action": Space(np.float32, (2,), -2.0, 4.0)}
    return obs, act


def _obs(rng, n=5, first=False):
    return {
        "vector": rng.normal(size=(n, 3)).astype(np.float32),
        "reward": rng.normal(size=n).astype(np.float32),
        "is_first": np.full(n, first),
        "is_last": np.zeros(n, bool),
        "is_terminal": np.zeros(n, bool),
    }


def _config():
    return load_config(["debug"], ["--ppo.rollout_length", "4", "--ppo.epochs", "2"])


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_checkpoint_round_trip_gives_identical_actions_values_and_optimizer(kind):
    obs_space, act_space = _spaces(kind)
    config = _config()
    agent = Agent(obs_space, act_space, config)
    rng = np.random.default_rng(0)
    state = agent.init_policy(5)
    for step in range(5):  # one full rollout (4 + 1 steps), then an update
        obs = _obs(rng, first=step == 0)
        act, state, extra = agent.policy(obs, state)
        agent.observe({**obs, **act, **extra})
    assert agent.ready()
    metrics, steps = agent.update()
    assert steps == 2 * config.ppo.minibatches
    assert {"loss/policy", "loss/value", "entropy", "approx_kl", "clip_frac", "opt/grad_norm"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    saved = agent.save()

    other = Agent(obs_space, act_space, config)
    other.load(saved)
    for a, b in zip(agent.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(np.asarray(other.optimizer.iterations)) == steps
    obs = _obs(np.random.default_rng(7))
    act_a, _, extra_a = agent.policy(obs, ())
    act_b, _, extra_b = other.policy(obs, ())
    for key in act_a:
        np.testing.assert_array_equal(act_a[key], act_b[key])
    for key in extra_a:
        np.testing.assert_allclose(extra_a[key], extra_b[key], rtol=1e-6)
    assert other.normalizer.state() == agent.normalizer.state()


def test_actions_fit_the_space_and_log_probs_are_of_the_raw_sample():
    obs_space, act_space = _spaces("continuous")
    agent = Agent(obs_space, act_space, _config())
    obs = _obs(np.random.default_rng(3), n=64)
    act, _, extra = agent.policy(obs, ())
    assert act["action"].shape == (64, 2) and act["action"].dtype == np.float32
    assert (act["action"] >= -2.0).all() and (act["action"] <= 4.0).all()
    raw = extra["ppo/raw/action"]
    np.testing.assert_allclose(act["action"], -2.0 + (np.clip(raw, -1, 1) + 1) * 3.0, rtol=1e-5)
    obs_space, act_space = _spaces("discrete")
    agent = Agent(obs_space, act_space, _config())
    act, _, extra = agent.policy(obs, ())
    assert set(np.unique(act["action"])) <= {1, 2, 3} and act["action"].dtype == np.int32
    np.testing.assert_array_equal(act["action"], extra["ppo/raw/action"] + 1)


def test_bad_observations_raise_naming_the_key():
    obs_space, act_space = _spaces("discrete")
    agent = Agent(obs_space, act_space, _config())
    obs = _obs(np.random.default_rng(0))
    with pytest.raises(ValueError, match="'vector' has shape \\(4,\\)"):
        agent.policy({**obs, "vector": np.zeros((5, 4), np.float32)}, ())
    with pytest.raises(ValueError, match="'vector' has dtype int64"):
        agent.policy({**obs, "vector": np.zeros((5, 3), np.int64)}, ())
    agent.policy({**obs, "vector": obs["vector"].astype(np.float64)}, ())  # float64 is still a float


def test_unsupported_action_spaces_are_named():
    obs_space, _ = _spaces("discrete")
    with pytest.raises(ValueError, match="Action 'buttons'.*discrete actions of shape"):
        Agent(obs_space, {"buttons": Space(np.int32, (3,), 0, 2)}, _config())
    with pytest.raises(ValueError, match="Action 'force'.*infinite bounds"):
        Agent(obs_space, {"force": Space(np.float32, (2,))}, _config())


def test_resume_refuses_a_changed_ppo_hyperparameter(tmp_path):
    from dreamer_tf.run.train import ConfigMismatchError, check_resume_config

    saved = load_config([], ["--agent_name", "ppo", "--task", "gym_CartPole-v1"])
    changed = saved.update({"ppo.lr": 1e-3})
    with pytest.raises(ConfigMismatchError, match="ppo.lr"):
        check_resume_config(changed, saved)
    changes = check_resume_config(saved.update({"run.steps": 10}), saved)  # a run key may change
    assert len(changes) == 1 and changes[0].startswith("run.steps")


def test_impala_encoder_has_the_residual_stacks_hand_counted():
    from dreamer_tf.ppo.networks import ImpalaEncoder

    space = {"image": Space(np.uint8, (8, 8, 3)), "vector": Space(np.float32, (5,))}
    enc = ImpalaEncoder(space, depths=[2, 2], blocks=1, layers=1, units=4, act="relu", name="enc")
    out = enc({"image": np.full((3, 8, 8, 3), 255, np.uint8), "vector": np.ones((3, 5), np.float32)})
    assert tuple(out.shape) == (3, 4 + 4) and enc.outputs == 8
    # stage 0: conv 3->2 (3*3*3*2 + 2 = 56), one residual block of two 2->2 convs (2 * 38 = 76);
    # stage 1: conv 2->2 (38) and a block (76); 8x8 -> 4x4 -> 2x2, flat 8 -> dense 4 (36);
    # vectors: dense 5 -> 4 (24).
    assert sum(int(np.prod(w.shape)) for w in enc.weights) == 56 + 76 + 38 + 76 + 36 + 24
    # Residual blocks keep the shape; the max-pool with stride 2 halves it (rounding up).
    odd = ImpalaEncoder(
        {"image": Space(np.uint8, (9, 9, 1))}, depths=[3], blocks=2, layers=0, units=2, act="relu"
    )
    assert tuple(odd({"image": np.zeros((1, 9, 9, 1), np.uint8)}).shape) == (1, 2)
    assert odd.dense.linear.inputs == 5 * 5 * 3


@pytest.mark.parametrize("envs,length", [(5, 3), (4, 3), (16, 1)])
def test_rollout_steps_fix_the_batch_per_update_whatever_the_env_count(envs, length):
    obs_space, act_space = _spaces("discrete")
    config = load_config(["debug", "ppo_acme"], ["--ppo.rollout_steps", "12", "--ppo.minibatches", "1"])
    assert config.ppo.net == "impala" and config.ppo.epochs == 2
    agent = Agent(obs_space, act_space, config)
    rng, state = np.random.default_rng(0), agent.init_policy(envs)
    for step in range(length + 1):  # ceil(12 / envs) steps per env, plus the bootstrap step
        assert not agent.ready()
        obs = _obs(rng, n=envs, first=step == 0)
        act, state, extra = agent.policy(obs, state)
        agent.observe({**obs, **act, **extra})
    assert agent.ready() and agent.rollout.length == length
    metrics, steps = agent.update()
    assert steps == 2 and np.isfinite(metrics["loss/policy"])


def test_an_unknown_ppo_network_is_named_with_the_valid_ones():
    from dreamer_tf.config import ConfigError, validate

    with pytest.raises(ConfigError, match="ppo.net.*dreamer.*impala"):
        validate(load_config(["debug"], ["--ppo.net", "resnet"]))
