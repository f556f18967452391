"""World model: encoder, RSSM, decoder, reward and continue heads, and their losses (paper, Eq. 4–5)."""

from __future__ import annotations

import math

import keras
from keras import ops

from dreamer_tf.dreamerv3.rssm import RSSM
from dreamer_tf.nn import ops as dops
from dreamer_tf.nn.nets import Decoder, Encoder, Head
from dreamer_tf.spaces import Space

sg = ops.stop_gradient


def action_size(act_space: dict[str, Space]) -> int:
    """Width of the concatenated action vector: one-hot for discrete keys, flat for continuous ones."""
    return sum(s.classes if s.discrete else math.prod(s.shape) for s in act_space.values())


def concat_actions(actions: dict, act_space: dict[str, Space]):
    """Actions dict → one float vector per step, keys in sorted order (discrete keys one-hot)."""
    parts = []
    for key in sorted(act_space):
        space, x = act_space[key], actions[key]
        if space.discrete:
            parts.append(ops.one_hot(ops.cast(x, "int32"), space.classes))
        else:
            parts.append(ops.reshape(ops.cast(x, "float32"), (*x.shape[: x.ndim - len(space.shape)], -1)))
    return ops.concatenate(parts, -1)


class WorldModel(keras.layers.Layer):
    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.obs_space, self.act_space, self.config = obs_space, act_space, config
        policy = self.dtype_policy
        self.encoder = Encoder(obs_space, **config.enc, name="enc", dtype=policy)
        self.rssm = RSSM(action_size(act_space), self.encoder.outputs, **config.dyn, name="dyn", dtype=policy)
        dyn = config.dyn
        self.decoder = Decoder(
            obs_space, dyn.deter, dyn.stoch * dyn.classes, **config.dec, name="dec", dtype=policy
        )
        feat = self.rssm.feat_size
        self.reward = Head(feat, **config.rewhead, name="rew", dtype=policy)
        self.cont = Head(feat, "binary", **config.conhead, name="con", dtype=policy)

    def feat(self, deter, stoch):
        """Concatenated model state [h, z] fed to heads, flattened over stoch × classes."""
        lead = [-1 if size is None else size for size in stoch.shape[:-2]]  # None: an exported batch
        flat = ops.reshape(stoch, (*lead, stoch.shape[-2] * stoch.shape[-1]))
        return ops.concatenate([ops.cast(deter, self.compute_dtype), ops.cast(flat, self.compute_dtype)], -1)

    def loss(self, obs: dict, prev_actions, deter, stoch, noise):
        """Prediction and KL losses on a replayed chunk.

        ``obs`` values are (B, T, ...), ``prev_actions`` (B, T, A) is the action that led to
        each step, ``deter``/``stoch`` the state before the first step, ``noise`` Gumbel
        noise (B, T, S, K). Returns per-step losses (B, T), the posterior states and metrics.
        """
        cfg = self.config
        is_first = obs["is_first"]
        B, T = is_first.shape
        flat_obs = {
            k: ops.reshape(obs[k], (B * T, *self.obs_space[k].shape))
            for k in self.encoder.obs_space
            if k in self.encoder.veckeys or k in self.encoder.imgkeys
        }
        tokens = dops.record("tokens", ops.reshape(self.encoder(flat_obs), (B, T, -1)))
        deters, stochs, post_logits = self.rssm.observe(deter, stoch, prev_actions, tokens, is_first, noise)
        prior_logits = ops.reshape(
            self.rssm.prior_logits(ops.reshape(deters, (B * T, -1))), post_logits.shape
        )
        dops.record("deter", deters)
        dops.record("stoch", stochs)
        dops.record("post_logits", post_logits)
        dops.record("prior_logits", prior_logits)
        losses = {}
        losses["dyn"], losses["rep"], metrics = self.rssm.kl_losses(post_logits, prior_logits)

        feat = self.feat(ops.reshape(deters, (B * T, -1)), ops.reshape(stochs, (B * T, *stochs.shape[2:])))
        flat_stoch = feat[:, self.rssm.deter :]
        recons = self.decoder(feat[:, : self.rssm.deter], flat_stoch)
        for key, dist in recons.items():
            target = ops.reshape(obs[key], (B * T, *self.obs_space[key].shape))
            target = ops.cast(target, "float32")
            if self.obs_space[key].is_image:
                target = target / 255.0
            loss = dist.loss(target)
            losses[key] = ops.reshape(ops.sum(ops.reshape(loss, (B * T, -1)), -1), (B, T))

        reward_in = feat if cfg.reward_grad else sg(feat)
        losses["rew"] = ops.reshape(self.reward(reward_in).loss(ops.reshape(obs["reward"], (B * T,))), (B, T))
        cont = 1.0 - ops.cast(obs["is_terminal"], "float32")
        if cfg.contdisc:
            cont = cont * (1.0 - 1.0 / cfg.horizon)
        losses["con"] = ops.reshape(self.cont(feat).loss(ops.reshape(cont, (B * T,))), (B, T))
        for key, value in losses.items():
            assert tuple(value.shape) == (B, T), (key, value.shape, (B, T))
        states = {"deter": deters, "stoch": stochs}
        return losses, states, metrics

    def imagine(self, deter, stoch, policy_fn, horizon: int, noise: dict):
        """Roll the prior forward ``horizon`` steps, acting with ``policy_fn(feat, noise_t)``.

        ``noise`` holds per-step arrays with time on axis 0: ``stoch`` (H, N, S, K) and the
        actor's ``action`` noise (H + 1, N, ...). Returns the states of all H + 1 steps
        (start included) and the actions taken in each, all time-major-free (N, H + 1, ...).
        """

        # The carry doubles as the per-step output (keras.ops.scan on TensorFlow requires it);
        # its action slot holds the action that led to the carried state.
        def step(carry, inputs):
            deter, stoch, _ = carry
            eps_act, eps_stoch = inputs
            action = policy_fn(sg(self.feat(deter, stoch)), eps_act)
            deter, stoch, _ = self.rssm.img_step(deter, stoch, action, eps_stoch)
            carry = (deter, stoch, action)
            return carry, carry

        init = (deter, stoch, ops.zeros((deter.shape[0], self.rssm.action_size), "float32"))
        _, (deters, stochs, actions) = dops.scan(step, init, (noise["action"][:-1], noise["stoch"]))
        last_action = policy_fn(sg(self.feat(deters[-1], stochs[-1])), noise["action"][-1])
        deters = ops.concatenate([deter[None], deters], 0)
        stochs = ops.concatenate([stoch[None], stochs], 0)
        actions = ops.concatenate([actions, last_action[None]], 0)
        swap = lambda x: ops.moveaxis(x, 0, 1)  # noqa: E731
        return swap(deters), swap(stochs), swap(actions)
