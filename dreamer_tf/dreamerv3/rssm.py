"""Recurrent state-space model (paper, Eq. 1): block GRU core, categorical latents.

State: ``deter`` (N, deter) and one-hot ``stoch`` (N, stoch, classes).

    h_t = f(h_{t-1}, z_{t-1}, a_{t-1})          core (block-diagonal GRU)
    z_t ~ q(z_t | h_t, x_t)                     posterior, used when observing
    ẑ_t ~ p(ẑ_t | h_t)                          prior, used when imagining
"""

from __future__ import annotations

import keras
from keras import ops

from dreamer_tf.nn import distributions as dists
from dreamer_tf.nn import ops as dops
from dreamer_tf.nn.nets import BlockLinear, Dense, Linear, activation, make_norm

sg = ops.stop_gradient


class RSSM(keras.layers.Layer):
    def __init__(
        self,
        action_size: int,
        token_size: int,
        *,
        deter: int,
        hidden: int,
        stoch: int,
        classes: int,
        act: str,
        norm: str,
        unimix: float,
        outscale: float,
        imglayers: int,
        obslayers: int,
        dynlayers: int,
        blocks: int,
        free_nats: float,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        assert deter % blocks == 0, f"deter {deter} must be divisible by blocks {blocks}"
        self.deter, self.hidden, self.stoch, self.classes = deter, hidden, stoch, classes
        self.blocks, self.unimix, self.free_nats = blocks, unimix, free_nats
        self.action_size = action_size
        policy = self.dtype_policy
        self.act = activation(act)
        flat = stoch * classes
        self.dynin0 = Dense(deter, hidden, act, norm, name="dynin0", dtype=policy)
        self.dynin1 = Dense(flat, hidden, act, norm, name="dynin1", dtype=policy)
        self.dynin2 = Dense(action_size, hidden, act, norm, name="dynin2", dtype=policy)
        # Each block sees its own slice of deter plus all three input embeddings.
        width = deter + blocks * 3 * hidden
        self.dynhid, self.dynhid_norm = [], []
        for i in range(dynlayers):
            self.dynhid.append(BlockLinear(width, deter, blocks, name=f"dynhid{i}", dtype=policy))
            self.dynhid_norm.append(make_norm(norm, deter, f"dynhid{i}norm", policy))
            width = deter
        self.gru = BlockLinear(width, 3 * deter, blocks, name="dyngru", dtype=policy)
        sizes = [deter + token_size] + [hidden] * obslayers
        self.obs_layers = [
            Dense(sizes[i], hidden, act, norm, name=f"obs{i}", dtype=policy) for i in range(obslayers)
        ]
        self.obs_logit = Linear(sizes[-1], flat, outscale, name="obslogit", dtype=policy)
        sizes = [deter] + [hidden] * imglayers
        self.img_layers = [
            Dense(sizes[i], hidden, act, norm, name=f"prior{i}", dtype=policy) for i in range(imglayers)
        ]
        self.img_logit = Linear(sizes[-1], flat, outscale, name="priorlogit", dtype=policy)

    @property
    def feat_size(self) -> int:
        return self.deter + self.stoch * self.classes

    def initial(self, batch_size: int) -> dict:
        return {
            "deter": ops.zeros((batch_size, self.deter), self.compute_dtype),
            "stoch": ops.zeros((batch_size, self.stoch, self.classes), "float32"),
        }

    def dist(self, logits) -> dists.OneHot:
        return dists.OneHot(logits, self.unimix)

    def core(self, deter, stoch, action):
        """One step of the block GRU: h_t from h_{t-1}, z_{t-1}, a_{t-1}."""
        n = deter.shape[0] if deter.shape[0] is not None else -1
        stoch = ops.reshape(stoch, (n, self.stoch * self.classes))
        # Keep large continuous actions from dominating the input (official: a / max(1, |a|)).
        action = action / sg(ops.maximum(1.0, ops.abs(action)))
        x = ops.concatenate([self.dynin0(deter), self.dynin1(stoch), self.dynin2(action)], -1)
        for i, (layer, norm) in enumerate(zip(self.dynhid, self.dynhid_norm)):
            # The first layer's block k sees deter's slice k and all of x.
            x = layer(deter, shared=x) if i == 0 else layer(x)
            if norm is not None:
                x = norm(x)
            x = self.act(x)
        # Each block's outputs are its [reset | candidate | update] gates.
        reset, cand, update = self.gru(x, parts=3)
        reset = ops.sigmoid(reset)
        cand = ops.tanh(reset * cand)
        update = ops.sigmoid(update - 1.0)  # gate bias −1: keep the old state by default
        deter = ops.cast(deter, cand.dtype)
        return update * cand + (1.0 - update) * deter

    def posterior_logits(self, deter, tokens):
        x = ops.concatenate([deter, ops.cast(tokens, deter.dtype)], -1)
        for layer in self.obs_layers:
            x = layer(x)
        return self._logits(self.obs_logit(x))

    def prior_logits(self, deter):
        x = deter
        for layer in self.img_layers:
            x = layer(x)
        return self._logits(self.img_logit(x))

    def _logits(self, x):
        return ops.reshape(ops.cast(x, "float32"), (-1, self.stoch, self.classes))

    def obs_step(self, deter, stoch, prev_action, tokens, is_first, noise):
        """Posterior step; the state and previous action are zeroed where an episode starts."""
        keep = 1.0 - ops.cast(is_first, "float32")[:, None]
        deter = deter * ops.cast(keep, deter.dtype)
        stoch = stoch * keep[:, :, None]
        prev_action = prev_action * keep
        deter = self.core(deter, stoch, prev_action)
        logits = self.posterior_logits(deter, tokens)
        stoch = self.dist(logits).sample(noise)
        return deter, stoch, logits

    def img_step(self, deter, stoch, action, noise):
        """Prior step: imagine the next state without an observation."""
        deter = self.core(deter, stoch, action)
        logits = self.prior_logits(deter)
        stoch = self.dist(logits).sample(noise)
        return deter, stoch, logits

    def observe(self, deter, stoch, prev_actions, tokens, is_first, noise):
        """Posterior states along time (axis 1) with ``keras.ops.scan``.

        Shapes: prev_actions (B, T, A), tokens (B, T, E), is_first (B, T), noise (B, T, S, K).
        Returns deter (B, T, D), stoch (B, T, S, K), posterior logits (B, T, S, K).
        """
        assert tokens.shape[:2] == is_first.shape[:2] == prev_actions.shape[:2], (
            tokens.shape,
            is_first.shape,
            prev_actions.shape,
        )
        swap = lambda x: ops.moveaxis(x, 1, 0)  # noqa: E731

        # keras.ops.scan on TensorFlow stacks the carry as the per-step output, so the
        # carry holds everything we want per step (the logits are never read back).
        def step(carry, inputs):
            deter, stoch, _ = carry
            action, token, first, eps = inputs
            carry = self.obs_step(deter, stoch, action, token, first, eps)
            return carry, carry

        inputs = (swap(prev_actions), swap(tokens), swap(is_first), swap(noise))
        init = (deter, stoch, ops.zeros_like(noise[:, 0]))
        _, (deters, stochs, logits) = dops.scan(step, init, inputs)
        return swap(deters), swap(stochs), swap(logits)

    def kl_losses(self, post_logits, prior_logits):
        """Dynamics and representation KL (paper, Eq. 5) with free nats, each (B, T)."""
        post, prior = self.dist(post_logits), self.dist(prior_logits)
        dyn = ops.sum(self.dist(sg(post_logits)).kl(prior), -1)
        rep = ops.sum(post.kl(self.dist(sg(prior_logits))), -1)
        if self.free_nats:
            dyn = ops.maximum(dyn, self.free_nats)
            rep = ops.maximum(rep, self.free_nats)
        metrics = {
            "dyn_ent": ops.mean(ops.sum(prior.entropy(), -1)),
            "rep_ent": ops.mean(ops.sum(post.entropy(), -1)),
        }
        return dyn, rep, metrics
