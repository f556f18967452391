"""PPO's actor and critic: an encoder per network plus heads.

Two encoders (``ppo.net``): ``dreamer`` is DreamerV3's (symlog MLP for vectors, CNN for images);
``impala`` is the residual CNN of IMPALA (Espeholt et al. 2018, the network the paper's PPO used)
for images and a plain ReLU MLP for vectors, as Acme's PPO networks have.

The actor and the critic have separate networks (as cleanrl and SB3 do for vector tasks), so the
value loss never competes with the policy for features. Each action key gets its own head: a
categorical for discrete keys, a Gaussian with a state-independent log std for continuous keys;
their log-probabilities and entropies add up (independent action components).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from dreamer_tf.nn.distributions import Categorical, gumbel
from dreamer_tf.nn.nets import MLP, Conv2D, Dense, Encoder, Linear, activation, flat_vectors, split_obs_keys
from dreamer_tf.ppo import losses
from dreamer_tf.spaces import Space

RAW = "ppo/raw/"  # extra key prefix of the sampled (unclipped, zero-based) actions
NETS = ("dreamer", "impala")


def check_action_space(act_space: dict[str, Space]) -> None:
    """Raise a ValueError naming the key if PPO cannot act in ``act_space``."""
    supported = (
        "PPO supports discrete actions of shape () (a categorical choice) and continuous float "
        "actions with finite bounds"
    )
    if not act_space:
        raise ValueError(f"The action space is empty; {supported}.")
    for key, space in act_space.items():
        if space.discrete:
            if space.shape != ():
                raise ValueError(
                    f"Action '{key}' is {space}: {supported}. Split a multi-discrete action into one "
                    "key per component (dreamer_tf.envs.gym does this for MultiDiscrete)."
                )
        elif not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"Action '{key}' is {space} with infinite bounds: {supported}.")


class PPOModel(keras.layers.Layer):
    """All weights of the PPO agent and its two pure step functions (``policy_step``, ``train_loss``)."""

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config, seed: int, **kw):
        super().__init__(**kw)
        check_action_space(act_space)
        self.obs_space, self.act_space, self.config = obs_space, act_space, config
        cfg = config.ppo
        policy = self.dtype_policy
        if cfg.net == "dreamer":
            enc = dict(cfg.enc)
            self.actor_enc = Encoder(obs_space, **enc, name="actor_enc", dtype=policy)
            self.critic_enc = Encoder(obs_space, **enc, name="critic_enc", dtype=policy)
            units, act, norm = enc["units"], enc["act"], enc["norm"]
        elif cfg.net == "impala":
            enc = dict(cfg.impala)
            self.actor_enc = ImpalaEncoder(obs_space, **enc, name="actor_enc", dtype=policy)
            self.critic_enc = ImpalaEncoder(obs_space, **enc, name="critic_enc", dtype=policy)
            units, act, norm = enc["units"], enc["act"], "none"
        else:
            raise ValueError(f"ppo.net is '{cfg.net}'; valid: {', '.join(NETS)}.")
        self.keys = self.actor_enc.veckeys + self.actor_enc.imgkeys
        self.actor_mlp = MLP(
            self.actor_enc.outputs, cfg.head_layers, units, act, norm, name="actor_mlp", dtype=policy
        )
        self.critic_mlp = MLP(
            self.critic_enc.outputs, cfg.head_layers, units, act, norm, name="critic_mlp", dtype=policy
        )
        width = units if cfg.head_layers else self.actor_enc.outputs
        self.heads, self.log_std = {}, {}
        for key in sorted(act_space):
            space = act_space[key]
            size = space.classes if space.discrete else math.prod(space.shape)
            # Small initial outputs: a near-uniform / zero-mean initial policy (cleanrl's std 0.01 init).
            self.heads[key] = Linear(width, size, cfg.policy_outscale, name=f"policy_{key}", dtype=policy)
            if not space.discrete:
                self.log_std[key] = self.add_weight(
                    shape=space.shape, initializer="zeros", name=f"log_std_{key}"
                )
        self.value_out = Linear(width, 1, 1.0, name="value", dtype=policy)
        self.seeds = keras.random.SeedGenerator(seed, name="seeds")

    # ------------------------------------------------------------------ networks

    def _inputs(self, obs: dict) -> dict:
        return {k: obs[k] for k in self.keys}

    def dists(self, obs: dict) -> dict:
        x = self.actor_mlp(self.actor_enc(self._inputs(obs)))
        out = {}
        for key, head in self.heads.items():
            space = self.act_space[key]
            logits = ops.cast(head(x), "float32")
            if space.discrete:
                out[key] = Categorical(logits)
            else:
                mean = ops.reshape(logits, (-1, *space.shape))
                out[key] = losses.Normal(mean, self.log_std[key])
        return out

    def value(self, obs: dict):
        """The critic's prediction of the normalised return, shape (N,)."""
        x = self.critic_mlp(self.critic_enc(self._inputs(obs)))
        return ops.cast(self.value_out(x), "float32")[:, 0]

    # ------------------------------------------------------------------ steps

    def policy_step(self, obs: dict, carry: tuple, sample: bool = True):
        """Act on a batch of observations. Returns raw actions (zero-based indices, unclipped
        Gaussian samples), the empty carry, and extra ``ppo/logp``, ``ppo/value``, ``ppo/raw/<key>``."""
        dists = self.dists(obs)
        n = ops.shape(obs["is_first"])[0]
        logp, actions, extra = 0.0, {}, {}
        for key, dist in dists.items():
            space = self.act_space[key]
            if space.discrete:
                noise = gumbel((n, space.classes), self.seeds)
            else:
                noise = keras.random.normal((n, *space.shape), seed=self.seeds)
            action = dist.sample(noise) if sample else dist.mode()
            logp = logp + dist.log_prob(action)
            actions[key] = action
            extra[RAW + key] = action
        extra["ppo/logp"] = logp
        extra["ppo/value"] = self.value(obs)
        return actions, carry, extra

    def after_update(self) -> None:
        """Nothing moves between optimizer steps (no slow networks)."""
        return None

    def train_loss(self, data: dict, training: bool = True):
        """PPO's loss on one minibatch of decision steps (flat, leading dim B).

        ``data`` holds the observation keys, ``ppo/raw/<key>`` actions, ``old_logp``,
        ``advantage``, ``target`` and ``old_value`` (normalised returns and values) and ``mask``
        (1 for decision steps). Returns ``loss, (metrics, {})``.
        """
        cfg = self.config.ppo
        mask = ops.cast(data["mask"], "float32")
        dists = self.dists(data)
        logp, entropy = 0.0, 0.0
        for key, dist in dists.items():
            logp = logp + dist.log_prob(data[RAW + key])
            entropy = entropy + dist.entropy()
        advantage = ops.cast(data["advantage"], "float32")
        if cfg.advantage_norm:
            advantage = losses.normalize_advantages(advantage, mask)
        old_logp = ops.cast(data["old_logp"], "float32")
        policy_loss = losses.masked_mean(losses.clipped_surrogate(logp, old_logp, advantage, cfg.clip), mask)
        value = self.value(data)
        critic_loss = losses.masked_mean(
            losses.value_loss(value, data["target"], data["old_value"], cfg.value_clip), mask
        )
        entropy = losses.masked_mean(entropy, mask)
        loss = policy_loss + cfg.value_coef * critic_loss - cfg.entropy_coef * entropy
        log_ratio = logp - old_logp
        ratio = ops.exp(log_ratio)
        metrics = {
            "loss/policy": policy_loss,
            "loss/value": critic_loss,
            "entropy": entropy,
            # The low-variance KL estimator E[(ρ − 1) − log ρ] (cleanrl, after Schulman's note).
            "approx_kl": losses.masked_mean((ratio - 1.0) - log_ratio, mask),
            "clip_frac": losses.masked_mean(ops.cast(ops.abs(ratio - 1.0) > cfg.clip, "float32"), mask),
        }
        return loss, (metrics, {})


class ImpalaEncoder(keras.layers.Layer):
    """IMPALA's residual CNN for images and a plain MLP for vectors, concatenated.

    Images: per entry of ``depths`` a 3×3 convolution, a 3×3 max-pool with stride 2 and ``blocks``
    residual blocks (x + conv(act(conv(act(x))))), then act → flatten → Dense(``units``) → act
    (Espeholt et al. 2018, Fig. 3, "large architecture"). Vectors: ``layers`` Dense(``units``) → act,
    without normalisation or symlog. Pixels are scaled to [0, 1].
    """

    def __init__(
        self,
        obs_space: dict[str, Space],
        *,
        depths: list[int],
        blocks: int,
        layers: int,
        units: int,
        act: str,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.obs_space = obs_space
        self.veckeys, self.imgkeys = split_obs_keys(obs_space)
        assert self.veckeys or self.imgkeys, f"No observation to encode in {obs_space}"
        self.act = activation(act)
        self.outputs = 0
        policy = self.dtype_policy
        if self.veckeys:
            size = sum(math.prod(obs_space[k].shape) for k in self.veckeys)
            self.mlp = MLP(size, layers, units, act, "none", name="mlp", dtype=policy)
            self.outputs += self.mlp.outputs
        if self.imgkeys:
            height, width = obs_space[self.imgkeys[0]].shape[:2]
            channels = sum(obs_space[k].shape[-1] for k in self.imgkeys)
            self.stages = []
            for i, depth in enumerate(depths):
                convs = [Conv2D(channels, depth, 3, name=f"stage{i}_conv", dtype=policy)]
                for j in range(2 * blocks):
                    convs.append(Conv2D(depth, depth, 3, name=f"stage{i}_res{j // 2}_{j % 2}", dtype=policy))
                self.stages.append(convs)
                channels, height, width = depth, -(-height // 2), -(-width // 2)
            flat = height * width * channels
            self.dense = Dense(flat, units, act, "none", name="dense", dtype=policy)
            self.outputs += units

    def call(self, obs: dict):
        """``obs`` values have shape (N, *space.shape); returns (N, outputs)."""
        outs = []
        if self.veckeys:
            outs.append(self.mlp(flat_vectors(obs, self.veckeys, self.obs_space)))
        if self.imgkeys:
            x = ops.concatenate([ops.cast(obs[k], "float32") for k in self.imgkeys], -1)
            x = ops.cast(x / 255.0, self.compute_dtype)
            for first, *residual in self.stages:
                x = ops.max_pool(first(x), pool_size=3, strides=2, padding="same")
                for a, b in zip(residual[::2], residual[1::2]):
                    x = x + b(self.act(a(self.act(x))))
            x = self.act(x)
            outs.append(self.dense(ops.reshape(x, (-1, math.prod(x.shape[1:])))))
        return ops.concatenate([ops.cast(x, self.compute_dtype) for x in outs], -1)
