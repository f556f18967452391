"""Actor-critic learned in imagination (paper, Eq. 6–11) plus the replay value loss."""

from __future__ import annotations

import math

import keras
from keras import ops

from dreamer_tf.nn import ops as dops
from dreamer_tf.nn.nets import Head
from dreamer_tf.spaces import Space

sg = ops.stop_gradient


class Normalize(keras.layers.Layer):
    """Running scale statistics for returns, values or advantages.

    ``perc``: EMA of the 5th and 95th return percentiles; the scale is
    ``max(limit, P95 − P5)`` (paper, Eq. 11). ``meanstd``: EMA of mean and
    second moment. ``none``: offset 0, scale 1. ``debias`` divides the EMAs by
    the accumulated weight, as for Adam's moments.
    """

    def __init__(
        self, impl: str, rate: float, limit: float, perclo: float, perchi: float, debias: bool, **kw
    ):
        super().__init__(**kw)
        if impl not in ("perc", "meanstd", "none"):
            raise ValueError(f"Unknown normaliser '{impl}'; valid: perc, meanstd, none.")
        self.impl, self.rate, self.limit = impl, rate, limit
        self.perclo, self.perchi, self.debias = perclo, perchi, debias
        zeros = dict(shape=(), initializer="zeros", trainable=False, dtype="float32")
        if impl != "none":
            self.first = self.add_weight(name="first", **zeros)  # lo or mean
            self.second = self.add_weight(name="second", **zeros)  # hi or mean of squares
            self.corr = self.add_weight(name="corr", **zeros)

    def update(self, x) -> None:
        if self.impl == "none":
            return
        x = dops.whole_batch(sg(ops.cast(x, "float32")))
        if self.impl == "perc":
            first = ops.quantile(ops.reshape(x, (-1,)), self.perclo / 100.0)
            second = ops.quantile(ops.reshape(x, (-1,)), self.perchi / 100.0)
        else:
            first, second = ops.mean(x), ops.mean(ops.square(x))
        mix = lambda var, value: var.assign((1 - self.rate) * var + self.rate * value)  # noqa: E731
        mix(self.first, first)
        mix(self.second, second)
        mix(self.corr, 1.0)

    def stats(self):
        """(offset, scale) for ``(x - offset) / scale``."""
        if self.impl == "none":
            return 0.0, 1.0
        corr = 1.0 / ops.maximum(self.rate, self.corr) if self.debias else 1.0
        first, second = self.first * corr, self.second * corr
        if self.impl == "perc":
            return sg(first), sg(ops.maximum(self.limit, second - first))
        std = ops.sqrt(ops.relu(second - ops.square(first)))
        return sg(first), sg(ops.maximum(self.limit, std))

    def __call__(self, x, update: bool):
        if update:
            self.update(x)
        return self.stats()


class ActorCritic(keras.layers.Layer):
    def __init__(self, feat_size: int, act_space: dict[str, Space], config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.act_space, self.config = act_space, config
        policy = self.dtype_policy
        self.actor = {}
        for key in sorted(act_space):
            space = act_space[key]
            if space.discrete:
                assert space.shape == (), f"Discrete action '{key}' must be a scalar, got {space}"
                self.actor[key] = Head(
                    feat_size,
                    "categorical",
                    classes=space.classes,
                    **config.policy,
                    name=f"pol_{key}",
                    dtype=policy,
                )
            else:
                self.actor[key] = Head(
                    feat_size, "bounded_normal", space.shape, **config.policy, name=f"pol_{key}", dtype=policy
                )
        self.value = Head(feat_size, **config.value, name="val", dtype=policy)
        self.slow_value = Head(feat_size, **config.value, name="slowval", dtype=policy)
        self.slow_value.trainable = False  # the setter also freezes the sublayers
        for target, source in zip(self.slow_value.weights, self.value.weights):
            target.assign(source)
        self.slow_count = self.add_weight(
            shape=(), initializer="zeros", dtype="float32", trainable=False, name="slow_count"
        )
        self.retnorm = Normalize(**config.retnorm, name="retnorm")
        self.valnorm = Normalize(**config.valnorm, name="valnorm")
        self.advnorm = Normalize(**config.advnorm, name="advnorm")

    # ------------------------------------------------------------------ acting

    def noise_size(self) -> int:
        """Width of the per-step noise vector: Gumbel per discrete class, a normal per continuous dim."""
        return sum(s.classes if s.discrete else math.prod(s.shape) for s in self.act_space.values())

    def draw_noise(self, shape, seed):
        """Noise for ``shape`` (leading dims) policy samples, split later by ``act``."""
        from dreamer_tf.nn.distributions import gumbel

        parts = []
        for key in sorted(self.act_space):
            space = self.act_space[key]
            if space.discrete:
                parts.append(gumbel((*shape, space.classes), seed))
            else:
                parts.append(keras.random.normal((*shape, math.prod(space.shape)), seed=seed))
        return ops.concatenate(parts, -1)

    def dists(self, feat) -> dict:
        return {key: head(feat) for key, head in self.actor.items()}

    def act(self, feat, noise, mode: str = "sample"):
        """Sample actions; returns (dict of env actions, concatenated action vector for the RSSM)."""
        actions, vector, offset = {}, [], 0
        for key, dist in self.dists(feat).items():
            space = self.act_space[key]
            if space.discrete:
                eps = noise[..., offset : offset + space.classes]
                offset += space.classes
                index = dist.sample(eps) if mode == "sample" else dist.mode()
                actions[key] = index
                vector.append(ops.one_hot(index, space.classes))
            else:
                size = math.prod(space.shape)
                eps = noise[..., offset : offset + size]
                offset += size
                sample = dist.sample(eps) if mode == "sample" else dist.mode()
                actions[key] = sample
                vector.append(sample)
        return actions, ops.concatenate(vector, -1)

    def split_actions(self, vector) -> dict:
        """Inverse of ``act``'s vector: indices for discrete keys, values for continuous ones."""
        out, offset = {}, 0
        for key in sorted(self.act_space):
            space = self.act_space[key]
            size = space.classes if space.discrete else math.prod(space.shape)
            part = vector[..., offset : offset + size]
            out[key] = ops.argmax(part, -1) if space.discrete else part
            offset += size
        return out

    # ------------------------------------------------------------------ losses

    def imag_loss(self, feat, action_vector, rew, con, training: bool):
        """Actor and critic losses on imagined trajectories, all (N, H + 1, ...)."""
        cfg = self.config
        il = cfg.imag_loss
        voffset, vscale = self.valnorm.stats()
        value_dist = self.value(feat)  # one critic pass for the values and the loss
        val = value_dist.pred() * vscale + voffset
        slow_dist = self.slow_value(feat)
        slowval = slow_dist.pred() * vscale + voffset
        tarval = slowval if il.slowtar else val
        disc = 1.0 if cfg.contdisc else 1.0 - 1.0 / cfg.horizon
        weight = ops.cumprod(disc * con, axis=1) / disc
        last = ops.zeros_like(con)
        term = 1.0 - con
        ret = dops.record("imag/ret", dops.lambda_return(last, term, rew, tarval, tarval, disc, il.lam))
        dops.record("imag/val", val)
        dops.record("imag/slowval", slowval)

        roffset, rscale = self.retnorm(ret, training)
        dops.record("retnorm/stats", (roffset, rscale))
        adv = dops.record("advnorm/input", (ret - tarval[:, :-1]) / rscale)
        aoffset, ascale = self.advnorm(adv, training)
        dops.record("advnorm/stats", (aoffset, ascale))
        adv_normed = (adv - aoffset) / ascale

        dists = self.dists(feat)
        actions = self.split_actions(sg(action_vector))
        logpi = sum(dists[k].log_prob(actions[k])[:, :-1] for k in dists)
        ents = {k: d.entropy()[:, :-1] for k, d in dists.items()}
        dops.record("imag/logpi", {k: d.log_prob(actions[k]) for k, d in dists.items()})
        dops.record("imag/ent", {k: d.entropy() for k, d in dists.items()})
        entropy = sum(ents.values())
        losses = {}
        losses["policy"] = sg(weight[:, :-1]) * -(logpi * sg(adv_normed) + il.actent * entropy)

        voffset, vscale = self.valnorm(ret, training)
        dops.record("valnorm/stats", (voffset, vscale))
        target = (ret - voffset) / vscale
        target = ops.concatenate([target, ops.zeros_like(target[:, -1:])], 1)
        value_loss = value_dist.loss(sg(target)) + il.slowreg * value_dist.loss(sg(slow_dist.pred()))
        losses["value"] = sg(weight[:, :-1]) * value_loss[:, :-1]

        metrics = {
            "adv": ops.mean(adv),
            "adv_std": ops.std(adv),
            "adv_mag": ops.mean(ops.abs(adv)),
            "rew": ops.mean(rew),
            "con": ops.mean(con),
            "ret": ops.mean((ret - roffset) / rscale),  # normalised as the advantages are, offset included
            "val": ops.mean(val),
            "slowval": ops.mean(slowval),
            "weight": ops.mean(weight),
            "retnorm_scale": rscale,
        }
        for key, ent in ents.items():
            metrics[f"ent/{key}"] = ops.mean(ent)
            lo, hi = dists[key].min_entropy, dists[key].max_entropy
            metrics[f"rand/{key}"] = (ops.mean(ent) - lo) / (hi - lo)
        return losses, ret, metrics

    def repl_loss(self, feat, last, term, rew, boot, training: bool):
        """Critic loss on replayed trajectories, bootstrapped by imagined returns (all (B, T, ...))."""
        cfg = self.config
        rl = cfg.repl_loss
        voffset, vscale = self.valnorm.stats()
        value_dist = self.value(feat)  # one critic pass for the values and the loss
        val = value_dist.pred() * vscale + voffset
        slow_dist = self.slow_value(feat)
        slowval = slow_dist.pred() * vscale + voffset
        tarval = slowval if rl.slowtar else val
        disc = 1.0 - 1.0 / cfg.horizon
        weight = 1.0 - ops.cast(last, "float32")
        ret = dops.record("repl/ret", dops.lambda_return(last, term, rew, tarval, boot, disc, rl.lam))
        dops.record("repl/boot", boot)
        dops.record("repl/val", val)
        voffset, vscale = self.valnorm(ret, training)
        target = (ret - voffset) / vscale
        target = ops.concatenate([target, ops.zeros_like(target[:, -1:])], 1)
        loss = value_dist.loss(sg(target)) + rl.slowreg * value_dist.loss(sg(slow_dist.pred()))
        return {"repval": weight[:, :-1] * loss[:, :-1]}

    def update_slow(self) -> None:
        """EMA of the critic's weights into the slow critic, every ``slowvalue.every`` updates."""
        rate, every = self.config.slowvalue.rate, self.config.slowvalue.every
        mix = ops.where(ops.mod(self.slow_count, every) == 0, rate, 0.0)
        for target, source in zip(self.slow_value.weights, self.value.weights):
            target.assign(mix * source + (1.0 - mix) * target)
        self.slow_count.assign(self.slow_count + 1.0)
