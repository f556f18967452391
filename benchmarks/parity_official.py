"""The official side of the parity harness: run danijar/dreamerv3 on fixed inputs and save what it computes.

    PYTHONPATH=PATH OFFICIAL_PYTHON benchmarks/parity_official.py --official PATH --case tiny_disc --out official.npz

Runs inside the official code's own virtual environment (JAX 0.4.33, ninjax, elements, optax; see
``dreamer_tf/harness/parity.py``, which calls it with the checkout on ``PYTHONPATH``) and imports nothing from dreamer_tf. It builds the official
agent for one case of ``CASES`` in float32, initialises its parameters, makes a replayed batch, a
policy input and every random draw from a NumPy seed, and runs eagerly (``jax_disable_jit``) so that
its categorical and normal samplers can be made to read the given draws in the order the agent makes
them. It saves, into one ``.npz``: the inputs, the initial parameters, the draws, the world-model and
actor-critic terms of one forward pass of ``Agent.loss``, the gradients and parameters of two
``Agent.train`` calls (the first update of a warm-up schedule has a learning rate of zero), the slow
critic and normalisers after them, and one ``Agent.policy`` step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# Cases: agent config overrides (paths into the official ``configs.yaml``) and the shapes of the data.
TINY = {
    "dyn.rssm": {"deter": 64, "hidden": 16, "stoch": 4, "classes": 4, "blocks": 8},
    "enc.simple": {"depth": 2, "units": 16, "layers": 2},
    "dec.simple": {"depth": 2, "units": 16, "layers": 2},
    "rewhead": {"units": 16, "bins": 15},
    "conhead": {"units": 16},
    "policy": {"units": 16, "layers": 2},
    "value": {"units": 16, "layers": 2, "bins": 15},
    "imag_length": 5,
}
SIZE1M = {
    "dyn.rssm": {"deter": 512, "hidden": 64, "classes": 4},
    "enc.simple": {"depth": 4, "units": 64},
    "dec.simple": {"depth": 4, "units": 64},
    "rewhead": {"units": 64},
    "conhead": {"units": 64},
    "policy": {"units": 64},
    "value": {"units": 64},
}
CASES = {
    "tiny_disc": {
        "agent": TINY,
        "obs": {"image": ("uint8", (64, 64, 3)), "vector": ("float32", (5,))},
        "act": {"action": ("int32", (), 4)},
        "batch": (2, 8),
    },
    "tiny_cont": {
        "agent": TINY,
        "obs": {"image": ("uint8", (64, 64, 3)), "vector": ("float32", (5,))},
        "act": {"action": ("float32", (2,), None)},
        "batch": (2, 8),
    },
    "size1m_proprio": {  # dmc_cartpole_balance's observation and action spaces, dmc_proprio's model
        "agent": SIZE1M,
        "obs": {"position": ("float32", (3,)), "velocity": ("float32", (2,))},
        "act": {"action": ("float32", (1,), None)},
        "batch": (4, 16),
    },
}
RESERVED = ("reward", "is_first", "is_last", "is_terminal")


def make_inputs(case: dict, seed: int) -> dict[str, np.ndarray]:
    """The replayed batch (with one context step), the policy's inputs and every random draw."""
    rng = np.random.default_rng(seed)
    B, T = case["batch"]
    C = 1
    agent = case["agent"]
    rssm = {"stoch": 32, "classes": 64, **agent["dyn.rssm"]}
    deter, S, K = rssm["deter"], rssm["stoch"], rssm["classes"]
    H = agent.get("imag_length", 15)
    arrays: dict[str, np.ndarray] = {}

    def observation(prefix: str, shape: tuple) -> None:
        for key, (dtype, space) in case["obs"].items():
            if dtype == "uint8":  # blocks of 4x4 pixels: smooth like a rendered frame, and small in a fixture
                coarse = rng.integers(
                    0, 256, (*shape, space[0] // 4, space[1] // 4, space[2]), dtype=np.uint8
                )
                arrays[f"{prefix}/{key}"] = coarse.repeat(4, -3).repeat(4, -2)
            else:
                arrays[f"{prefix}/{key}"] = rng.normal(0, 2, (*shape, *space)).astype(np.float32)
        arrays[f"{prefix}/reward"] = rng.normal(0, 1, shape).astype(np.float32)
        first = np.zeros(shape, bool)
        last = np.zeros(shape, bool)
        term = np.zeros(shape, bool)
        if len(shape) == 2:  # episode boundaries inside the batch: an end, then a new start
            last[0, T // 2], term[0, T // 2], first[0, T // 2 + 1] = True, True, True
            last[-1, -1] = True  # a time limit: last but not terminal
        else:
            first[0] = True
        arrays[f"{prefix}/is_first"], arrays[f"{prefix}/is_last"] = first, last
        arrays[f"{prefix}/is_terminal"] = term

    def action(prefix: str, shape: tuple) -> None:
        for key, (_, space, classes) in case["act"].items():
            if classes:
                arrays[f"{prefix}/{key}"] = rng.integers(0, classes, shape).astype(np.int32)
            else:
                arrays[f"{prefix}/{key}"] = rng.uniform(-1.5, 1.5, (*shape, *space)).astype(np.float32)

    observation("data", (B, C + T))
    action("data", (B, C + T))
    arrays["data/dyn/deter"] = rng.normal(0, 0.5, (B, C + T, deter)).astype(np.float32)
    arrays["data/dyn/stoch"] = rng.integers(0, K, (B, C + T, S)).astype(np.int32)
    arrays["data/stepid"] = rng.integers(0, 256, (B, C + T, 20)).astype(np.uint8)
    observation("policy/obs", (B,))
    arrays["policy/carry/deter"] = rng.normal(0, 0.5, (B, deter)).astype(np.float32)
    arrays["policy/carry/stoch"] = rng.integers(0, K, (B, S)).astype(np.int32)
    action("policy/carry/prevact", (B,))

    def gumbel(shape: tuple) -> np.ndarray:
        uniform = rng.uniform(1e-6, 1 - 1e-6, shape)
        return (-np.log(-np.log(uniform))).astype(np.float32)

    def action_noise(shape: tuple) -> np.ndarray:
        parts = []
        for key in sorted(case["act"]):
            _, space, classes = case["act"][key]
            parts.append(
                gumbel((*shape, classes))
                if classes
                else rng.normal(0, 1, (*shape, *space)).astype(np.float32)
            )
        return np.concatenate(parts, -1)

    N = B * T
    arrays["noise/obs"] = gumbel((B, T, S, K))
    arrays["noise/img_stoch"] = gumbel((H, N, S, K))
    arrays["noise/img_action"] = action_noise((H + 1, N))
    arrays["noise/policy_stoch"] = gumbel((B, S, K))
    arrays["noise/policy_action"] = action_noise((B,))
    return arrays


MODULES = ("dyn/", "enc/", "dec/", "rew/", "con/", "pol/", "val/", "slowval/")


def perturb(params: dict, rng: np.random.Generator, scale: float) -> dict:
    """Move every weight away from its initialisation, and the slow critic away from the critic.

    At initialisation the reward and value heads output exactly zero (zero output layers), the actor
    is nearly uniform, every norm scale is one and the slow critic equals the critic, so many terms
    would agree whatever the code does (a 1% uniform mix of a uniform policy changes nothing, nor
    does an average of two equal critics). Noise of ``scale`` times each tensor's spread (0.1 times
    ``scale`` where the tensor is constant) makes every term depend on the weights.
    """
    if not scale:
        return params
    out = dict(params)
    for key in sorted(params):
        if key.startswith(MODULES):
            value = params[key]
            spread = float(params[key.replace("slowval/", "val/", 1)].std()) or 0.1
            out[key] = (value + rng.normal(0, scale * spread, value.shape)).astype(value.dtype)
            if key.endswith("/head/logits/bias") and key.startswith(("rew/", "val/", "slowval/")):
                # Twohot heads peaked around the middle bins, as trained ones are: a flat random
                # distribution over bins reaching ±exp(20) predicts values near 1e7, where float32
                # rounding alone gives relative errors of 1e-4 downstream.
                middle = (len(value) - 1) / 2
                out[key] = (out[key] - np.abs(np.arange(len(value)) - middle)).astype(value.dtype)
    return out


class Draws:
    """The draws the patched samplers read, in the order the official agent samples."""

    def __init__(self) -> None:
        self.queue: list[np.ndarray] = []

    def load(self, arrays: list[np.ndarray]) -> None:
        self.queue = list(arrays)

    def pop(self, shape: tuple) -> np.ndarray:
        assert self.queue, f"the official agent drew more samples than expected (shape {shape})"
        value = self.queue.pop(0)
        assert value.shape == tuple(shape), f"draw of shape {value.shape} where the agent needs {shape}"
        return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", required=True, help="checkout of danijar/dreamerv3")
    parser.add_argument("--case", required=True, choices=sorted(CASES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--perturb", type=float, default=0.5, help="noise on the initial weights (see perturb)"
    )
    args = parser.parse_args()
    if not (Path(args.official) / "dreamerv3" / "agent.py").exists():
        raise SystemExit(
            f"--official {args.official}: not a checkout of danijar/dreamerv3 (no dreamerv3/agent.py)"
        )

    import dreamerv3.agent as official
    import elements
    import embodied.jax
    import embodied.jax.nets as nn
    import jax
    import jax.numpy as jnp
    import ninjax as nj
    import optax
    import ruamel.yaml as yaml

    nn.COMPUTE_DTYPE = jnp.float32
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_disable_jit", True)  # eager, so that every sample reads the next draw

    draws = Draws()
    active = [False]
    outs = embodied.jax.outs
    original_categorical, original_normal = outs.Categorical.sample, outs.Normal.sample

    def replaying() -> bool:
        # ninjax runs a scan's body once ahead (``ignore=True``) to learn what state it touches.
        return active[0] and not nj.context().ignore

    def categorical_sample(self, seed, shape=()):
        if not replaying():
            return original_categorical(self, seed, shape)
        noise = draws.pop(tuple(shape) + self.logits.shape)
        return jnp.argmax(self.logits + noise, -1)

    def normal_sample(self, seed, shape=()):
        if not replaying():
            return original_normal(self, seed, shape)
        noise = draws.pop(tuple(shape) + self.mean.shape)
        return noise * self.stddev + self.mean

    outs.Categorical.sample = categorical_sample
    outs.Normal.sample = normal_sample

    case = CASES[args.case]
    B, T = case["batch"]
    configs = yaml.YAML(typ="safe").load((Path(args.official) / "dreamerv3" / "configs.yaml").read_text())
    config = elements.Config(configs["defaults"])
    config = config.update({f"agent.{k}": v for k, v in case["agent"].items()})
    config = config.update({"jax.platform": "cpu", "jax.compute_dtype": "float32"})
    agent_config = elements.Config(
        **config.agent, logdir="", seed=args.seed, jax=config.jax, batch_size=B, batch_length=T,
        replay_context=1, report_length=T, replica=0, replicas=1,
    )  # fmt: skip
    obs_space = {}
    for key, (dtype, shape) in case["obs"].items():
        obs_space[key] = elements.Space(np.uint8 if dtype == "uint8" else np.float32, shape)
    obs_space["reward"] = elements.Space(np.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        obs_space[key] = elements.Space(bool)
    act_space = {}
    for key, (_, shape, classes) in case["act"].items():
        if classes:
            act_space[key] = elements.Space(np.int32, shape, 0, classes)
        else:
            act_space[key] = elements.Space(np.float32, shape, -1.0, 1.0)

    model = object.__new__(official.Agent)
    model.__init__(obs_space, act_space, agent_config)

    arrays = make_inputs(case, args.seed)
    K = case["agent"]["dyn.rssm"].get("classes", 64)

    def batch() -> dict:
        data = {k[len("data/") :]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("data/")}
        data["dyn/stoch"] = jax.nn.one_hot(data["dyn/stoch"], K, dtype=jnp.float32)
        data["consec"] = jnp.zeros((B, T + 1), jnp.int32)  # the first chunk: start from the stored latents
        return data

    def loss_draws() -> list[np.ndarray]:
        """Observe: one (B, S, K) draw per step; imagine: per step the action, then the latent; the last action."""
        obs = [arrays["noise/obs"][:, t] for t in range(T)]
        img = []
        for h in range(arrays["noise/img_stoch"].shape[0]):
            img += split_action(arrays["noise/img_action"][h])
            img.append(arrays["noise/img_stoch"][h])
        return obs + img + split_action(arrays["noise/img_action"][-1])

    def split_action(noise: np.ndarray) -> list[np.ndarray]:
        parts, offset = [], 0
        for key in sorted(case["act"]):
            _, space, classes = case["act"][key]
            size = classes or int(np.prod(space))
            parts.append(
                noise[..., offset : offset + size].reshape(
                    *noise.shape[:-1], *((classes,) if classes else space)
                )
            )
            offset += size
        return parts

    seed = jnp.array([args.seed, 0], jnp.uint32)
    carry = nj.pure(model.init_train)({}, B, seed=seed)[1]
    params = nj.init(model.train)({}, carry, batch(), seed=seed)
    params = {k: np.asarray(v) for k, v in params.items()}
    params = perturb(params, np.random.default_rng(args.seed + 1), args.perturb)
    results: dict[str, np.ndarray] = {f"param/{k}": v for k, v in params.items()}

    # Forward pass of Agent.loss, with the terms the report compares captured on the way.
    captured: dict[str, object] = {}
    original_imag_loss, original_repl_loss = official.imag_loss, official.repl_loss

    class Recording:
        """Stands in for a normaliser: records what it is given and what it returns."""

        def __init__(self, name, norm):
            self.name, self.norm = name, norm

        def __call__(self, x, update):
            captured[f"{self.name}/input"] = x
            result = self.norm(x, update)
            captured[f"{self.name}/stats"] = jnp.stack([jnp.asarray(v, jnp.float32) for v in result])
            return result

        def stats(self):
            return self.norm.stats()

    def imag_loss(act, rew, con, policy, value, slowvalue, retnorm, valnorm, advnorm, **kw):
        captured.update(
            imag_act=act, imag_rew=rew, imag_con=con, imag_val=value.pred(), imag_slowval=slowvalue.pred()
        )
        captured["imag_logpi"] = {k: v.logp(act[k]) for k, v in policy.items()}
        captured["imag_ent"] = {k: v.entropy() for k, v in policy.items()}
        result = original_imag_loss(
            act, rew, con, policy, value, slowvalue,
            Recording("retnorm", retnorm), Recording("valnorm", valnorm), Recording("advnorm", advnorm), **kw,
        )  # fmt: skip
        captured["imag_ret"] = result[1]["ret"]
        return result

    def repl_loss(last, term, rew, boot, value, slowvalue, valnorm, **kw):
        captured.update(repl_boot=boot, repl_val=value.pred())
        result = original_repl_loss(last, term, rew, boot, value, slowvalue, valnorm, **kw)
        captured["repl_ret"] = result[1]["ret"]
        return result

    original_imagine = model.dyn.imagine

    def imagine(*a, **kw):
        result = original_imagine(*a, **kw)
        if callable(a[1]) and not kw.get("single"):  # the loss's imagination, not its steps
            _, feat, action = result
            captured.update(img_deter=feat["deter"], img_stoch=feat["stoch"], img_action=action)
        return result

    official.imag_loss, official.repl_loss = imag_loss, repl_loss
    model.dyn.imagine = imagine

    def forward(carry, data):
        carry, obs, prevact, _ = model._apply_replay_context(carry, data)
        loss, (_, entries, outputs, metrics) = model.loss(carry, obs, prevact, training=True)
        feat = outputs["repfeat"]
        prior = model.dyn._prior(feat["deter"])
        _, _, recons = model.dec({}, feat, obs["is_first"], False)
        inp = model.feat2tensor(feat)
        return {
            "loss": loss, "metrics": metrics, "tokens": outputs["tokens"], "losses": outputs["losses"],
            "post_logits": feat["logit"], "prior_logits": prior, "deter": feat["deter"], "stoch": feat["stoch"],
            "recon": {k: v.pred() for k, v in recons.items()},
            "rew_pred": model.rew(inp, 2).pred(), "con_prob": model.con(inp, 2).prob(1),
        }  # fmt: skip

    active[0] = True
    draws.load(loss_draws())
    state, fwd = nj.pure(forward)(dict(params), carry, batch(), seed=seed)
    assert not draws.queue, f"{len(draws.queue)} draws left unused by the forward pass"
    put = lambda name, value: results.__setitem__(name, np.asarray(value, np.float32))  # noqa: E731
    put("out/loss", fwd["loss"])
    for name in ("tokens", "post_logits", "prior_logits", "deter", "stoch", "rew_pred", "con_prob"):
        put(f"out/{name}", fwd[name])
    for key, value in fwd["recon"].items():
        put(f"out/recon/{key}", value[:1, :1])  # one frame: images are big; their loss covers the rest
    for key, value in fwd["losses"].items():
        put(f"out/losses/{key}", value)
    for key, value in fwd["metrics"].items():
        put(f"out/metrics/{key}", value)
    put("out/img/deter", captured["img_deter"])
    put("out/img/stoch", captured["img_stoch"])
    for key, value in captured["img_action"].items():
        put(f"out/img/action/{key}", value)
    for key, value in captured["imag_act"].items():
        put(f"out/imag/act/{key}", value)
    for name in ("rew", "con", "val", "slowval", "ret"):
        put(f"out/imag/{name}", captured[f"imag_{name}"])
    for key, value in captured["imag_logpi"].items():
        put(f"out/imag/logpi/{key}", value)
    for key, value in captured["imag_ent"].items():
        put(f"out/imag/ent/{key}", value)
    for name in ("retnorm", "valnorm", "advnorm"):
        put(f"out/{name}/input", captured[f"{name}/input"])
        put(f"out/{name}/stats", captured[f"{name}/stats"])
    for name in ("boot", "val", "ret"):
        put(f"out/repl/{name}", captured[f"repl_{name}"])
    for key in ("retnorm/lo", "retnorm/hi"):
        put(f"out/state/{key}", state[f"{key}/value"])

    # Two train steps (gradients recorded from the optimizer's input), then the slow critic.
    grads: list[dict] = []
    chain = model.opt.opt

    def update(g, s, p=None):
        grads.append({k: np.asarray(v) for k, v in g.items()})
        return chain.update(g, s, p)

    model.opt.opt = optax.GradientTransformation(chain.init, update)
    full = dict(params)
    train_carry = nj.pure(model.init_train)({}, B, seed=seed)[1]
    before = {}
    for step in (1, 2):
        draws.load(loss_draws())
        full, (train_carry, replay, metrics) = nj.pure(model.train)(full, train_carry, batch(), seed=seed)
        assert not draws.queue, f"{len(draws.queue)} draws left unused by train step {step}"
        for key, value in grads[-1].items():
            put(f"grad{step}/{key}", value)
        if step == 2:  # optax chain: agc, scale_by_rms (step, nu), scale_by_momentum (step, mu), lr
            for key, value in full.items():
                for index, name in (("1/1/", "nu"), ("2/1/", "mu")):
                    if key.startswith("opt/state/" + index):
                        put(f"opt2/{name}/{key[len('opt/state/' + index) :]}", value)
        for key, value in full.items():
            if key.startswith(MODULES):
                if step == 2:  # the step itself: it is far below the float32 resolution of the weights
                    put(f"update2/{key}", np.asarray(value, np.float64) - np.asarray(before[key], np.float64))
                before[key] = value
        for key, value in metrics.items():
            put(f"train{step}/metrics/{key}", value)
        if step == 1:
            for key in ("dyn/deter", "dyn/stoch"):
                put(f"train1/replay/{key}", replay["replay"][key])

    # One policy step from the given carry and observation.
    prevact = {k: jnp.asarray(arrays[f"policy/carry/prevact/{k}"]) for k in case["act"]}
    policy_carry = (
        {},
        {"deter": jnp.asarray(arrays["policy/carry/deter"]),
         "stoch": jax.nn.one_hot(arrays["policy/carry/stoch"], K, dtype=jnp.float32)},
        {},
        prevact,
    )  # fmt: skip
    obs = {k[len("policy/obs/") :]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("policy/obs/")}
    draws.load([arrays["noise/policy_stoch"], *split_action(arrays["noise/policy_action"])])
    _, (policy_carry, act, _) = nj.pure(model.policy)(dict(params), policy_carry, obs, seed=seed)
    assert not draws.queue, "draws left unused by the policy step"
    for key, value in act.items():
        put(f"policy/out/act/{key}", value)
    put("policy/out/deter", policy_carry[1]["deter"])
    put("policy/out/stoch", policy_carry[1]["stoch"])

    meta = {"case": args.case, "seed": args.seed, "perturb": args.perturb, "config": case}
    results["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    for key, value in arrays.items():
        results[f"in/{key}"] = value
    np.savez_compressed(args.out, **results)
    print(f"[official] {args.case}: {len(params)} parameters, {len(results)} arrays -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
