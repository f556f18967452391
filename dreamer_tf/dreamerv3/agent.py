"""The DreamerV3 agent: one model, one scalar loss, one optimizer (paper, Algorithm 1).

    agent = Agent(env.obs_space, env.act_space, config)
    state = agent.init_policy(num_envs)
    actions, state, extra = agent.policy(obs, state)          # numpy in, numpy out
    metrics, replay_updates = agent.train(replay.sample(16))  # one update

Stop-gradients, not separate optimizers, keep the parts apart: the world model
trains on its prediction and KL losses (and the replay value loss), the actor
on imagined advantages, the critic on imagined and replayed λ-returns.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from dreamer_tf.config import ConfigError
from dreamer_tf.drawing import plot_lines
from dreamer_tf.dreamerv3.behavior import ActorCritic
from dreamer_tf.dreamerv3.optim import make_optimizer
from dreamer_tf.dreamerv3.world_model import WorldModel, concat_actions
from dreamer_tf.keras_agent import KerasAgent
from dreamer_tf.nn import ops as dops
from dreamer_tf.nn.distributions import gumbel
from dreamer_tf.nn.nets import split_obs_keys
from dreamer_tf.spaces import Space

sg = ops.stop_gradient


class DreamerModel(keras.layers.Layer):
    """All networks and running statistics of the agent, plus the two pure step functions."""

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config, seed: int, **kw):
        super().__init__(**kw)
        self.obs_space, self.act_space, self.config = obs_space, act_space, config
        agent = config.agent
        policy = self.dtype_policy
        self.wm = WorldModel(obs_space, act_space, agent, name="wm", dtype=policy)
        self.ac = ActorCritic(self.wm.rssm.feat_size, act_space, agent, name="ac", dtype=policy)
        self.seeds = keras.random.SeedGenerator(seed, name="seeds")
        # A list in the space's order, not a set: a set's order changes with each process's string
        # hashing, and so would the traced program (and JAX's compilation-cache key with it).
        self.keys = [k for k in obs_space if not k.startswith("log/")]
        vec, img = split_obs_keys(obs_space)
        self.scales = dict(agent.loss_scales)
        rec = self.scales.pop("rec")
        self.scales.update({k: rec for k in vec + img})
        if not agent.repval_loss:
            self.scales.pop("repval")

    # ------------------------------------------------------------------ policy

    def initial_carry(self, batch_size: int) -> tuple:
        rssm = self.wm.rssm
        return (
            ops.zeros((batch_size, rssm.deter), "float32"),
            ops.zeros((batch_size, rssm.stoch, rssm.classes), "float32"),
            ops.zeros(
                (
                    batch_size,
                    sum(s.classes if s.discrete else math.prod(s.shape) for s in self.act_space.values()),
                ),
                "float32",
            ),
        )

    def policy_noise(self, batch_size: int) -> tuple:
        """One step's sampling noise: Gumbel for the posterior (N, stoch, classes), the actor's vector."""
        rssm = self.wm.rssm
        stoch = gumbel((batch_size, rssm.stoch, rssm.classes), self.seeds)
        return stoch, self.ac.draw_noise((batch_size,), self.seeds)

    def policy_step(self, obs: dict, carry: tuple, sample: bool = True, noise: tuple | None = None):
        """Observe one step of every environment and act. Pure apart from the seed generator.

        ``noise`` (``policy_noise``'s pair) replaces the seed generator's draws, so that an exported
        policy given the same noise acts the same. ``sample=False`` acts with the actor's mode
        (the posterior latent is still sampled).

        Continuous samples leave unclipped, as in the official agent: replay, the RSSM and the
        actor's log-probabilities see the sample itself; the environment clips it into its bounds
        (``envs.wrappers.ClipAction``). Clipping here biased the actor's gradient: at a clipped
        sample the log-probability no longer tells how far out the policy reached.
        """
        deter, stoch, prev_action = carry
        rssm = self.wm.rssm
        n = obs["is_first"].shape[0]
        stoch_noise, action_noise = self.policy_noise(n) if noise is None else noise
        tokens = self.wm.encoder({k: obs[k] for k in self.wm.encoder.veckeys + self.wm.encoder.imgkeys})
        deter, stoch, _ = rssm.obs_step(
            ops.cast(deter, self.compute_dtype), stoch, prev_action, tokens, obs["is_first"], stoch_noise
        )
        feat = self.wm.feat(deter, stoch)
        actions, vector = self.ac.act(feat, action_noise, "sample" if sample else "mode")
        extra = {"dyn/deter": ops.cast(deter, "float32"), "dyn/stoch": ops.argmax(stoch, -1)}
        carry = (ops.cast(deter, "float32"), stoch, vector)
        return actions, carry, extra

    # ------------------------------------------------------------------ training

    def after_update(self) -> None:
        """Called by the runner after every optimizer step: move the slow critic."""
        self.ac.update_slow()

    def train_loss(self, data: dict, training: bool = True):
        """The single scalar loss of Algorithm 1 on a replayed batch (B, C + T, ...).

        The first C = ``replay_context`` steps only provide the starting latent state
        (stored by the policy or a previous update) and the action that followed it.
        Returns ``loss, (metrics, replay_updates)``.
        """
        cfg = self.config
        agent = cfg.agent
        rssm = self.wm.rssm
        C = cfg.replay_context
        B, CT = data["is_first"].shape
        T = CT - C
        act_vec = concat_actions({k: data[k] for k in self.act_space}, self.act_space)
        if C:
            deter = data["dyn/deter"][:, C - 1]
            stoch = ops.one_hot(ops.cast(data["dyn/stoch"][:, C - 1], "int32"), rssm.classes)
            prev = act_vec[:, C - 1 : -1]
        else:
            deter, stoch, _ = self.initial_carry(B)
            prev = ops.concatenate([ops.zeros_like(act_vec[:, :1]), act_vec[:, :-1]], 1)
        obs = {k: data[k][:, C:] for k in self.keys}
        noise = dops.batch_draw(lambda shape: gumbel(shape, self.seeds), (B, T, rssm.stoch, rssm.classes))
        losses, states, metrics = self.wm.loss(obs, prev, ops.cast(deter, self.compute_dtype), stoch, noise)

        # Imagination from every posterior state of the batch (N = B·T starts).
        N, H = B * T, agent.imag_length
        start_deter = ops.reshape(states["deter"], (N, rssm.deter))
        start_stoch = ops.reshape(states["stoch"], (N, rssm.stoch, rssm.classes))
        if not agent.ac_grads:
            start_deter, start_stoch = sg(start_deter), sg(start_stoch)
        img_noise = {
            "stoch": dops.batch_draw(
                lambda shape: gumbel(shape, self.seeds), (H, N, rssm.stoch, rssm.classes), 1
            ),
            "action": dops.batch_draw(lambda shape: self.ac.draw_noise(shape, self.seeds), (H + 1, N), 1),
        }
        policy_fn = lambda feat, eps: self.ac.act(feat, eps)[1]  # noqa: E731
        deters, stochs, actions = self.wm.imagine(start_deter, start_stoch, policy_fn, H, img_noise)
        dops.record("img/deter", deters)
        dops.record("img/stoch", stochs)
        dops.record("img/action", actions)
        feat = self.wm.feat(deters, stochs)
        if agent.ac_grads:
            feat = ops.concatenate([feat[:, :1], sg(feat[:, 1:])], 1)
        else:
            feat = sg(feat)
        rew = dops.record("imag/rew", sg(self.wm.reward(feat).pred()))
        con = dops.record("imag/con", sg(self.wm.cont(feat).prob()))
        img_losses, ret, img_metrics = self.ac.imag_loss(feat, actions, rew, con, training)
        for key, value in img_losses.items():
            losses[key] = ops.reshape(ops.mean(value, 1), (B, T))
        metrics.update(img_metrics)

        if agent.repval_loss:
            rep_feat = self.wm.feat(states["deter"], states["stoch"])
            if not agent.repval_grad:
                rep_feat = sg(rep_feat)
            boot = ops.reshape(ret[:, 0], (B, T))
            last = ops.cast(obs["is_last"], "float32")
            term = ops.cast(obs["is_terminal"], "float32")
            losses.update(
                self.ac.repl_loss(rep_feat, last, term, ops.cast(obs["reward"], "float32"), boot, training)
            )

        missing = set(losses) ^ set(self.scales)
        assert not missing, f"losses {sorted(losses)} do not match scales {sorted(self.scales)}"
        dops.record("losses", dict(losses))
        loss = dops.record("loss", sum(ops.mean(value) * self.scales[key] for key, value in losses.items()))
        metrics.update({f"loss/{key}": ops.mean(value) for key, value in losses.items()})
        updates = {}
        if C:
            updates = {
                "stepid": data["stepid"][:, C:],
                "dyn/deter": ops.cast(states["deter"], "float32"),
                "dyn/stoch": ops.argmax(states["stoch"], -1),
            }
        return loss, (metrics, updates)

    # ------------------------------------------------------------------ report

    def report_step(self, data: dict, noise: dict, context: int) -> dict:
        """Open-loop predictions on replayed sequences (B, C + T, ...), as the official agent's report.

        The posterior observes all T steps (its decodings are the reconstructions); from its state
        at step ``context - 1`` the prior imagines steps ``context .. T - 1`` with the replayed
        actions and no observations. ``noise`` holds Gumbel noise ``post`` (B, T, S, K) and
        ``prior`` (B, T - context, S, K), drawn by the caller so that reports leave the model's
        seed generator (and so training's randomness) untouched. Returns, each (B, T, ...):
        ``post/<key>`` and ``open/<key>`` (image predictions in [0, 1]; ``open`` equals ``post``
        for the context steps), ``post/reward``, ``open/reward``, ``post/cont``, ``open/cont``.
        """
        rssm = self.wm.rssm
        C = self.config.replay_context
        B, CT = data["is_first"].shape
        T = CT - C
        assert 0 < context < T, (context, T)
        act_vec = concat_actions({k: data[k] for k in self.act_space}, self.act_space)
        if C:
            deter = ops.cast(data["dyn/deter"][:, C - 1], self.compute_dtype)
            stoch = ops.one_hot(ops.cast(data["dyn/stoch"][:, C - 1], "int32"), rssm.classes)
            prev = act_vec[:, C - 1 : -1]
        else:
            deter, stoch, _ = self.initial_carry(B)
            deter = ops.cast(deter, self.compute_dtype)
            prev = ops.concatenate([ops.zeros_like(act_vec[:, :1]), act_vec[:, :-1]], 1)
        obs = {k: data[k][:, C:] for k in self.keys}
        enc = self.wm.encoder
        flat_obs = {
            k: ops.reshape(obs[k], (B * T, *self.obs_space[k].shape)) for k in enc.veckeys + enc.imgkeys
        }
        tokens = ops.reshape(enc(flat_obs), (B, T, -1))
        deters, stochs, _ = rssm.observe(deter, stoch, prev, tokens, obs["is_first"], noise["post"])

        def step(carry, inputs):
            action, eps = inputs
            deter, stoch, _ = rssm.img_step(*carry, action, eps)
            return (deter, stoch), (deter, stoch)

        swap = lambda x: ops.moveaxis(x, 0, 1)  # noqa: E731
        start = (deters[:, context - 1], stochs[:, context - 1])
        _, (img_deters, img_stochs) = dops.scan(step, start, (swap(prev[:, context:]), swap(noise["prior"])))
        states = {
            "post": (deters, stochs),
            "open": (
                ops.concatenate([deters[:, :context], swap(img_deters)], 1),
                ops.concatenate([stochs[:, :context], swap(img_stochs)], 1),
            ),
        }
        out = {}
        for name, (deter_seq, stoch_seq) in states.items():
            feat = self.wm.feat(
                ops.reshape(deter_seq, (B * T, rssm.deter)),
                ops.reshape(stoch_seq, (B * T, rssm.stoch, rssm.classes)),
            )
            recons = self.wm.decoder(feat[:, : rssm.deter], feat[:, rssm.deter :])
            for key in self.wm.decoder.imgkeys:
                out[f"{name}/{key}"] = ops.reshape(recons[key].pred(), (B, T, *self.obs_space[key].shape))
            out[f"{name}/reward"] = ops.reshape(self.wm.reward(feat).pred(), (B, T))
            out[f"{name}/cont"] = ops.reshape(self.wm.cont(feat).prob(), (B, T))
        return out


def check_image_sizes(obs_space: dict[str, Space], enc_stages: int, dec_stages: int) -> None:
    """Image sizes the convolutional encoder and decoder can take, or a ``ConfigError`` saying how to fix it.

    Each stage halves height and width (the decoder doubles them back), so both must be multiples of
    ``2 ** stages`` and end between 3 and 16 pixels: 64x64 and 96x96 with the default four stages.
    """
    _, imgkeys = split_obs_keys(obs_space)
    for key in imgkeys:
        height, width = obs_space[key].shape[:2]
        fits = all(
            size % 2**stages == 0 and 3 <= size // 2**stages <= 16
            for size in (height, width)
            for stages in (enc_stages, dec_stages)
        )
        if not fits:
            raise ConfigError(
                f"Image observation '{key}' is {height}x{width}; DreamerV3's encoder and decoder need sides "
                f"that halve {max(enc_stages, dec_stages)} times into 3-16 pixels, such as 64x64 or 96x96. "
                "Resize it (the atari, dmc, procgen and crafter domains do; for Gymnasium, "
                "gymnasium.wrappers.ResizeObservation)."
            )


class Agent(KerasAgent):
    """DreamerV3 implementing the ``dreamer_tf.run.contracts.Agent`` protocol."""

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config) -> None:
        super().__init__(obs_space, act_space, config)
        for key, space in self.act_space.items():
            if not space.discrete and not (np.all(space.low == -1) and np.all(space.high == 1)):
                raise ValueError(
                    f"Continuous action '{key}' must be normalised to [-1, 1], got {space}. "
                    "Wrap the environment so its actions are rescaled (dreamer_tf.envs.gym does this)."
                )
        check_image_sizes(obs_space, len(config.agent.enc.mults), len(config.agent.dec.mults))
        with self.scope():
            model = DreamerModel(
                obs_space, self.act_space, config, seed=config.seed, name="dreamer", dtype=self.dtype_policy
            )
            actor_vars = [v for head in model.ac.actor.values() for v in head.trainable_variables]
            optimizer = make_optimizer(
                config.agent.opt,
                loss_scale=self.precision == "float16",
                multipliers=[(v, config.agent.opt.actor) for v in actor_vars],
            )
            self.build(model, optimizer)
        devices = getattr(self.runner, "device_count", 1)
        if config.batch_size % devices:
            raise ConfigError(
                f"batch_size {config.batch_size} cannot be split evenly over {devices} devices "
                "(compile.devices); choose a multiple of the device count."
            )
        # Reports draw their own noise, so that they never change the course of training.
        self._report_rng = np.random.default_rng(config.seed + 1)
        self._report_fns: dict[int, Any] = {}

    def param_summary(self) -> str:
        lines = [f"DreamerV3 with {self.param_count:,} trainable parameters:"]
        for name, layer in [
            ("encoder", self.model.wm.encoder),
            ("rssm", self.model.wm.rssm),
            ("decoder", self.model.wm.decoder),
            ("reward", self.model.wm.reward),
            ("continue", self.model.wm.cont),
            ("value", self.model.ac.value),
        ]:
            lines.append(f"{sum(math.prod(v.shape) for v in layer.trainable_variables):>14,} {name}")
        actor = sum(
            math.prod(v.shape) for head in self.model.ac.actor.values() for v in head.trainable_variables
        )
        lines.append(f"{actor:>14,} actor")
        return "\n".join(lines)

    def init_policy(self, batch_size: int) -> Any:
        return tuple(np.asarray(x) for x in self.model.initial_carry(batch_size))

    def policy(
        self, obs: dict, state: Any, mode: str = "train", noise: tuple | None = None
    ) -> tuple[dict, Any, dict]:
        """The loop's ``policy``; mode ``greedy`` acts with the actor's mode. ``noise``
        (``DreamerModel.policy_noise``'s pair, numpy) replaces the agent's own draws."""
        if mode == "random":
            return self.random_policy(obs, state)
        sample = mode != "greedy"
        actions, state, extra = self.runner.policy(self.inputs(obs), state, sample, noise)
        actions = {k: v.astype(self.act_space[k].dtype) for k, v in actions.items()}
        return actions, state, extra

    def train_inputs(self, batch: dict) -> dict:
        """The entries of a replayed batch that the train step reads, in a fixed order."""
        keys = [*self.model.keys, *self.act_space]
        if self.config.replay_context:
            keys += ["dyn/deter", "dyn/stoch", "stepid"]
        missing = set(keys) - set(batch)
        if missing:
            raise ValueError(f"Training batch lacks keys {sorted(missing)}; it has {sorted(batch)}.")
        return {k: batch[k] for k in keys}

    def train(self, batch: dict) -> tuple[dict[str, float], dict]:
        return self.runner.train(self.train_inputs(batch))

    def report(
        self, batch: dict, sequences: int = 6, context: int = 5
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Open-loop predictions on the first ``sequences`` sequences of a replayed batch.

            metrics, media = agent.report(replay.sample(6))

        The world model observes the first ``context`` steps of each sequence and imagines the rest
        from the actions that were taken (the official agent's report). ``media`` holds, per image
        key, ``openloop/<key>``: a uint8 video [B, T, H, 3·W, C] of the true frames | the model's
        (its reconstruction for the context steps, its imagination after) | the error, mid-grey
        where they agree. Tasks without images get ``openloop/reward_cont`` instead, a uint8 plot
        [H, W, 3] of predicted against true rewards and continuation flags of up to four sequences.
        ``metrics`` are mean squared image errors and mean absolute reward and continuation errors,
        ``openloop/<name>_context`` and ``openloop/<name>_imagined``.
        """
        data = {k: np.asarray(v)[:sequences] for k, v in self.train_inputs(batch).items()}
        C = self.config.replay_context
        B, CT = data["is_first"].shape
        T = CT - C
        if T < 2:
            raise ValueError(f"An open-loop report needs sequences of at least 2 steps, got {T}.")
        context = max(1, min(int(context), T - 1))
        rssm = self.model.wm.rssm
        rng = self._report_rng
        gumbel_noise = lambda *shape: -np.log(-np.log(rng.uniform(1e-6, 1 - 1e-6, shape))).astype(np.float32)  # noqa: E731
        noise = {
            "post": gumbel_noise(B, T, rssm.stoch, rssm.classes),
            "prior": gumbel_noise(B, T - context, rssm.stoch, rssm.classes),
        }
        if context not in self._report_fns:
            self._report_fns[context] = functools.partial(self.model.report_step, context=context)
        out = self.runner.call(self._report_fns[context], data, noise)

        obs = {k: v[:, C:] for k, v in data.items()}
        metrics, media = {}, {}
        split = (
            lambda name, err: {  # noqa: E731
                f"openloop/{name}_context": float(np.mean(err[:, :context])),
                f"openloop/{name}_imagined": float(np.mean(err[:, context:])),
            }
        )
        for key in self.model.wm.decoder.imgkeys:
            true = obs[key]
            pred = np.clip(out[f"open/{key}"], 0.0, 1.0)
            model = np.round(pred * 255).astype(np.uint8)
            error = ((model.astype(np.int32) - true.astype(np.int32) + 255) // 2).astype(np.uint8)
            media[f"openloop/{key}"] = np.concatenate([true, model, error], axis=3)
            squared = np.square(pred - true.astype(np.float32) / 255.0)
            metrics.update(split(f"{key}_mse", squared.reshape(B, T, -1).mean(-1)))
        reward = obs["reward"].astype(np.float32)
        cont = 1.0 - obs["is_terminal"].astype(np.float32)
        metrics.update(split("reward_mae", np.abs(out["open/reward"] - reward)))
        metrics.update(split("cont_mae", np.abs(out["open/cont"] - cont)))
        if not self.model.wm.decoder.imgkeys:
            panels = []
            for index in range(min(B, 4)):
                panels.append(
                    (f"sequence {index}: reward", {"true": reward[index], "model": out["open/reward"][index]})
                )
                panels.append(
                    (f"sequence {index}: continue", {"true": cont[index], "model": out["open/cont"][index]})
                )
            media["openloop/reward_cont"] = plot_lines(panels, marker=context)
        return metrics, media
