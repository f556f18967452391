"""Numerical parity with the official DreamerV3 (danijar/dreamerv3): same weights, inputs and draws, same numbers.

    # once: the official code and its own virtual environment (JAX 0.4.33 on the CPU)
    git clone https://github.com/danijar/dreamerv3 ~/dreamerv3 && git -C ~/dreamerv3 checkout e3f0224
    python benchmarks/parity.py setup --venv ~/dreamerv3-venv
    # run the official side of each case and compare ours with it on this backend (or all of them)
    python benchmarks/parity.py run --official ~/dreamerv3 --venv ~/dreamerv3-venv --backends tensorflow jax
    # compare ours with saved official outputs (the golden fixtures of tests/parity), no official code needed
    python benchmarks/parity.py compare tests/fixtures/parity/tiny_disc.npz

``benchmarks/parity_official.py`` (a standalone script that imports nothing from dreamer_tf) runs in the official environment and saves, per case, the inputs, the
official initial parameters, every random draw and what the official agent computes from them. This
script builds our agent with the same configuration (``case_config``), copies the official parameters
into it by the explicit name and layout map of ``parameter_map``, feeds the same batch, starting latents
and draws, and compares term by term: encoder tokens, posterior and prior logits, predictions, each loss,
the imagined trajectories, λ-returns, the normalisers, the advantages, the total loss, every gradient
before each of two LaProp updates with warm-up, the change of every weight by the second update (the
first has a learning rate of zero; the step is far below the float32 resolution of the weights, so the
step is compared, not the weights), the slow critic's change, and one policy step. The report is a table of relative errors per term (``‖ours − official‖ /
‖official‖``; the largest absolute error where the official value is zero); discrete samples must agree
exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

# The official side is a script of the checkout (it runs in the official venv, which lacks dreamer_tf).
OFFICIAL_SIDE = Path(__file__).resolve().parents[2] / "benchmarks" / "parity_official.py"
TOLERANCE = 1e-4  # relative error allowed per term in float32
ABS_TOLERANCE = 1e-6  # discrete samples: one-hot values and indices must be the same
# The optimizer state reached end to end (our gradients into our optimizer): LaProp's first steps
# divide each gradient element by its own magnitude, so the float32 noise of an element whose gradient
# is about zero (1e-5 of its tensor's RMS) becomes a difference of order one in that element. Within
# this bound such rows are "explained"; the optimizer fed the official gradients must meet TOLERANCE.
E2E_TOLERANCE = 1e-2
OFFICIAL_REQUIREMENTS = [
    "jax[cpu]==0.4.33", "chex", "einops", "elements>=3.19.1", "granular>=0.20.3", "ninjax>=3.5.1",
    "numpy<2", "optax", "portal>=3.5.0", "scope>=0.4.4", "tqdm", "ruamel.yaml",
]  # fmt: skip
OFFICIAL_COMMIT = "e3f0224"


def official_requirements(jax: str | None = None) -> list[str]:
    """The official code's environment: its pinned JAX, or ``jax`` (a later version, on which
    ``benchmarks/official_throughput.py`` runs it for a comparison on one compiler) with any numpy."""
    if jax is None:
        return list(OFFICIAL_REQUIREMENTS)
    swap = {"jax": f"jax=={jax}", "numpy": "numpy"}
    return [swap.get(re.split(r"[\[<>=]", r, maxsplit=1)[0], r) for r in OFFICIAL_REQUIREMENTS]


def jax_version(text: str) -> str:
    """``--jax``: a release number such as 0.10.2."""
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        raise argparse.ArgumentTypeError(f"expected a JAX release such as 0.10.2, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------- config


def case_config(meta: dict):
    """Our config for an official case: the same agent keys, float32, one context step, eager steps."""
    from dreamer_tf.config import load_config

    case = meta["config"]
    names = {"dyn.rssm": "dyn", "enc.simple": "enc", "dec.simple": "dec"}
    updates = {"seed": meta["seed"], "compile.precision": "float32", "replay_context": 1}
    for key, value in case["agent"].items():
        key = names.get(key, key)
        if isinstance(value, dict):
            updates.update({f"agent.{key}.{k}": v for k, v in value.items()})
        else:
            updates[f"agent.{key}"] = value
    B, T = case["batch"]
    updates.update(batch_size=B, batch_length=T)
    return load_config().update(updates)


def spaces(meta: dict):
    from dreamer_tf.spaces import Space

    case = meta["config"]
    obs = {}
    for key, (dtype, shape) in case["obs"].items():
        obs[key] = Space(np.uint8 if dtype == "uint8" else np.float32, tuple(shape))
    obs["reward"] = Space(np.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        obs[key] = Space(bool)
    act = {}
    for key, (_, shape, classes) in case["act"].items():
        act[key] = Space(np.int32, (), 0, classes) if classes else Space(np.float32, tuple(shape), -1.0, 1.0)
    return obs, act


# ------------------------------------------------------------------------------------- parameter map


def parameter_map(model) -> dict[str, object]:
    """Official parameter name → our variable, for every trainable weight and normaliser statistic.

    Layouts agree (dense kernels (in, out), block-diagonal kernels (blocks, in, out), convolutions HWIO,
    the decoder's spatial block map in the official (g, h, w, c) order), so each weight copies as is.
    """
    wm, ac = model.wm, model.ac
    out: dict[str, object] = {}

    def linear(name, layer):
        out[f"{name}/kernel"] = layer.kernel
        if layer.bias is not None:
            out[f"{name}/bias"] = layer.bias

    def norm(name, layer):
        if layer is not None:
            out[f"{name}/scale"] = layer.scale

    def dense(name, norm_name, layer):
        linear(name, layer.linear)
        norm(norm_name, layer.norm)

    def mlp(prefix, layers):
        for i, layer in enumerate(layers):
            dense(f"{prefix}/linear{i}", f"{prefix}/norm{i}", layer)

    enc = wm.encoder
    if enc.veckeys:
        for i, layer in enumerate(enc.mlp.layers_):
            dense(f"enc/mlp{i}", f"enc/mlp{i}norm", layer)
    if enc.imgkeys:
        for i, (conv, layer) in enumerate(zip(enc.convs, enc.conv_norms)):
            linear(f"enc/cnn{i}", conv)
            norm(f"enc/cnn{i}norm", layer)
    rssm = wm.rssm
    for i in range(3):
        dense(f"dyn/dynin{i}", f"dyn/dynin{i}norm", getattr(rssm, f"dynin{i}"))
    for i, (layer, layer_norm) in enumerate(zip(rssm.dynhid, rssm.dynhid_norm)):
        linear(f"dyn/dynhid{i}", layer)
        norm(f"dyn/dynhid{i}norm", layer_norm)
    linear("dyn/dyngru", rssm.gru)
    for i, layer in enumerate(rssm.obs_layers):
        dense(f"dyn/obs{i}", f"dyn/obs{i}norm", layer)
    linear("dyn/obslogit", rssm.obs_logit)
    for i, layer in enumerate(rssm.img_layers):
        dense(f"dyn/prior{i}", f"dyn/prior{i}norm", layer)
    linear("dyn/priorlogit", rssm.img_logit)
    dec = wm.decoder
    if dec.veckeys:
        mlp("dec/mlp", dec.mlp.layers_)
        for key, layer in dec.vec_out.items():
            linear(f"dec/vec/{key}/pred", layer)
    if dec.imgkeys:
        if dec.bspace:
            linear("dec/sp0", dec.sp0)
            dense("dec/sp1", "dec/sp1norm", dec.sp1)
            linear("dec/sp2", dec.sp2)
            norm("dec/spnorm", dec.space_norm)
        else:
            linear("dec/space", dec.space)
            norm("dec/spacenorm", dec.space_norm)
        # Our decoder builds its convolutions from the deepest level up, as the official one names them.
        for i, (conv, layer) in zip(reversed(range(len(dec.convs))), zip(dec.convs, dec.conv_norms)):
            linear(f"dec/conv{i}", conv)
            norm(f"dec/conv{i}norm", layer)
        linear("dec/imgout", dec.img_out)

    def head(prefix, layer, output):
        mlp(f"{prefix}/mlp", layer.mlp.layers_)
        linear(f"{prefix}/{output}", layer.out)

    head("rew", wm.reward, "head/logits")
    head("con", wm.cont, "head/logit")
    # One actor head per action key; the official agent shares one MLP between its keys, so only
    # single-key action spaces map (load_official reports any weight left without a counterpart).
    for key, layer in ac.actor.items():
        if layer.output_kind == "bounded_normal":
            head("pol", layer, f"head/{key}/mean")
            linear(f"pol/head/{key}/stddev", layer.out_std)
        else:
            head("pol", layer, f"head/{key}/logits")
    head("val", ac.value, "head/logits")
    head("slowval", ac.slow_value, "head/logits")
    for name in ("retnorm", "valnorm", "advnorm"):
        normaliser = getattr(ac, name)
        if normaliser.impl == "perc":
            out[f"{name}/lo/value"] = normaliser.first
            out[f"{name}/hi/value"] = normaliser.second
        elif normaliser.impl == "meanstd":
            out[f"{name}/mean/value"] = normaliser.first
            out[f"{name}/sqrs/value"] = normaliser.second
        if normaliser.impl != "none" and normaliser.debias:
            out[f"{name}/corr/value"] = normaliser.corr
    out["slowval_count/value"] = ac.slow_count
    return out


def load_official(model, fixture: dict, prefix: str = "param/") -> dict[str, object]:
    """Copy the official parameters into ``model``; every official weight and every one of ours is used once."""
    mapping = parameter_map(model)
    official = {k[len(prefix) :]: v for k, v in fixture.items() if k.startswith(prefix)}
    official = {k: v for k, v in official.items() if not k.startswith("opt/")}
    missing = sorted(set(official) - set(mapping))
    extra = sorted(set(mapping) - set(official))
    if missing or extra:
        raise ValueError(f"parameter map mismatch: official only {missing}, ours only {extra}")
    ours = {id(v) for v in mapping.values()}
    unmapped = [v.path for v in model.trainable_variables if id(v) not in ours]
    if unmapped:
        raise ValueError(f"our weights without an official counterpart: {unmapped}")
    for name, variable in mapping.items():
        value = np.asarray(official[name], np.float32)
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{name}: official shape {value.shape}, ours {tuple(variable.shape)} ({variable.path})"
            )
        variable.assign(value.astype(variable.dtype))
    return mapping


# --------------------------------------------------------------------------------------------- ours


class Draws:
    """Our samplers' noise, served in the order the agent asks for it (checked by shape)."""

    def __init__(self) -> None:
        self.queue: list[np.ndarray] = []

    def load(self, *arrays: np.ndarray) -> None:
        self.queue = list(arrays)

    def take(self, shape) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        assert self.queue, f"our agent drew more noise than the official one (shape {shape})"
        value = self.queue.pop(0)
        assert value.shape == shape, f"noise of shape {value.shape} where our agent needs {shape}"
        return value


def ours(fixture: dict) -> dict[str, np.ndarray]:
    """Run our agent on the fixture's inputs; return its terms under the fixture's names."""
    import dreamer_tf.dreamerv3.agent as agent_module

    sampler = agent_module.gumbel
    try:
        return _ours(fixture)
    finally:
        agent_module.gumbel = sampler


def _ours(fixture: dict) -> dict[str, np.ndarray]:
    import keras

    import dreamer_tf.dreamerv3.agent as agent_module
    from dreamer_tf.dreamerv3.agent import Agent
    from dreamer_tf.nn import ops as dops

    meta = json.loads(bytes(fixture["meta"]).decode())
    config = case_config(meta)
    obs_space, act_space = spaces(meta)
    agent = Agent(obs_space, act_space, config)
    model = agent.model
    mapping = load_official(model, fixture)
    agent.runner.reload()
    draws = Draws()
    agent_module.gumbel = lambda shape, seed: keras.ops.convert_to_tensor(draws.take(shape))
    model.ac.draw_noise = lambda shape, seed: keras.ops.convert_to_tensor(
        draws.take((*shape, model.ac.noise_size()))
    )
    inputs = {k[len("in/data/") :]: v for k, v in fixture.items() if k.startswith("in/data/")}
    batch = agent.train_inputs(inputs)
    loss_draws = (fixture["in/noise/obs"], fixture["in/noise/img_stoch"], fixture["in/noise/img_action"])
    result: dict[str, np.ndarray] = {}
    put = lambda name, value: result.__setitem__(name, np.asarray(value, np.float32))  # noqa: E731
    state = [np.array(v.numpy()) for v in model.non_trainable_variables]

    def restore() -> None:
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)

    # Forward pass, recording the intermediate terms.
    draws.load(*loss_draws)
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in batch.items()}
    with dops.recording() as values:
        loss, (metrics, updates) = model.train_loss(tensors)
    assert not draws.queue
    put("out/loss", loss)
    for name in ("tokens", "post_logits", "prior_logits", "deter", "stoch"):
        put(f"out/{name}", values[name])
    for key, value in values["losses"].items():
        put(f"out/losses/{key}", value)
    for key, value in metrics.items():
        put(f"out/metrics/{key}", value)
    B, T = batch["is_first"].shape[0], batch["is_first"].shape[1] - 1
    deter, stoch = values["deter"], values["stoch"]
    feat = model.wm.feat(
        keras.ops.reshape(deter, (B * T, -1)), keras.ops.reshape(stoch, (B * T, *stoch.shape[2:]))
    )
    recons = model.wm.decoder(feat[:, : model.wm.rssm.deter], feat[:, model.wm.rssm.deter :])
    for key, dist in recons.items():  # vectors in symlog space, as the official MSE output predicts them
        put(f"out/recon/{key}", keras.ops.reshape(dist.raw, (B, T, *obs_space[key].shape))[:1, :1])
    put("out/rew_pred", keras.ops.reshape(model.wm.reward(feat).pred(), (B, T)))
    put("out/con_prob", keras.ops.reshape(model.wm.cont(feat).prob(), (B, T)))
    H = config.agent.imag_length
    put("out/img/deter", values["img/deter"][:, 1:])
    put("out/img/stoch", values["img/stoch"][:, 1:])
    split = model.ac.split_actions(values["img/action"])
    for key in act_space:
        put(f"out/img/action/{key}", split[key][:, :H])
        put(f"out/imag/act/{key}", split[key])
    for name in ("rew", "con", "val", "slowval", "ret"):
        put(f"out/imag/{name}", values[f"imag/{name}"])
    for key in act_space:
        put(f"out/imag/logpi/{key}", values["imag/logpi"][key])
        put(f"out/imag/ent/{key}", values["imag/ent"][key])
    put("out/retnorm/input", values["imag/ret"])
    put("out/advnorm/input", values["advnorm/input"])
    put("out/valnorm/input", values["imag/ret"])
    for name in ("retnorm", "advnorm", "valnorm"):
        put(f"out/{name}/stats", np.stack([np.asarray(v, np.float32) for v in values[f"{name}/stats"]]))
    for name in ("boot", "val", "ret"):
        put(f"out/repl/{name}", values[f"repl/{name}"])
    for name in ("retnorm/lo/value", "retnorm/hi/value"):
        put(f"out/state/{name.rsplit('/', 1)[0]}", mapping[name])
    restore()

    # Two updates, each with the gradient of the state it starts from.
    names = {id(v): name for name, v in mapping.items()}
    before: dict[str, np.ndarray] = {}
    for step in (1, 2):
        draws.load(*loss_draws)
        grads = gradients(agent, batch)
        assert not draws.queue
        restore()
        for variable, grad in zip(model.trainable_variables, grads):
            put(f"grad{step}/{names[id(variable)]}", grad)
        draws.load(*loss_draws)
        metrics, updates = agent.train(batch)
        assert not draws.queue or step == 2, "the compiled step reads its draws once, when traced"
        agent.runner.sync()
        state = [np.array(v.numpy()) for v in model.non_trainable_variables]
        for name, variable in mapping.items():
            if name.split("/")[0] in ("dyn", "enc", "dec", "rew", "con", "pol", "val", "slowval"):
                value = np.asarray(variable, np.float64)
                if step == 2:  # the step itself: it is far below the float32 resolution of the weights
                    put(
                        f"{'' if name.startswith('slowval/') else 'e2e/'}update2/{name}", value - before[name]
                    )
                before[name] = value
        if step == 2:
            optimizer = agent.optimizer
            for variable in model.trainable_variables:
                index = optimizer._get_variable_index(variable)
                put(f"e2e/opt2/mu/{names[id(variable)]}", optimizer._mu[index])
                put(f"e2e/opt2/nu/{names[id(variable)]}", optimizer._nu[index])
        if step == 1:
            put("train1/replay/dyn/deter", updates["dyn/deter"])
            put("train1/replay/dyn/stoch", np.eye(model.wm.rssm.classes)[updates["dyn/stoch"]])
        for key, value in metrics.items():
            put(f"train{step}/metrics/{key}", value)

    # The optimizer alone, fed the official gradients. The end-to-end state above also carries the
    # float32 differences of the gradients, which the first LaProp steps (each element divided by its
    # own magnitude) magnify in elements whose gradient is about zero.
    from dreamer_tf.dreamerv3.optim import make_optimizer

    weights = [
        keras.Variable(np.asarray(fixture["param/" + names[id(v)]], np.float32), name=f"weight{i}")
        for i, v in enumerate(model.trainable_variables)
    ]
    actor = {id(v) for head in model.ac.actor.values() for v in head.trainable_variables}
    optimizer = make_optimizer(
        config.agent.opt,
        multipliers=[
            (w, config.agent.opt.actor) for w, v in zip(weights, model.trainable_variables) if id(v) in actor
        ],
    )
    optimizer.build(weights)
    for step in (1, 2):
        before_step = [np.asarray(w, np.float64) for w in weights]
        grads = [fixture[f"grad{step}/{names[id(v)]}"] for v in model.trainable_variables]
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], weights)
    for weight, variable, previous in zip(weights, model.trainable_variables, before_step):
        name, index = names[id(variable)], optimizer._get_variable_index(weight)
        put(f"opt2/mu/{name}", optimizer._mu[index])
        put(f"opt2/nu/{name}", optimizer._nu[index])
        put(f"update2/{name}", np.asarray(weight, np.float64) - previous)

    # One policy step.
    obs = {k[len("in/policy/obs/") :]: v for k, v in fixture.items() if k.startswith("in/policy/obs/")}
    prev = {k: fixture[f"in/policy/carry/prevact/{k}"] for k in act_space}
    from dreamer_tf.dreamerv3.world_model import concat_actions

    carry = (
        fixture["in/policy/carry/deter"],
        np.eye(model.wm.rssm.classes, dtype=np.float32)[fixture["in/policy/carry/stoch"]],
        np.asarray(concat_actions(prev, act_space)),
    )
    draws.load(fixture["in/noise/policy_stoch"], fixture["in/noise/policy_action"])
    actions, carry, _ = agent.runner.policy(obs, carry)
    for key, value in actions.items():
        put(f"policy/out/act/{key}", value)
    put("policy/out/deter", carry[0])
    put("policy/out/stoch", carry[1])
    return result


def gradients(agent, batch: dict) -> list[np.ndarray]:
    """The gradient of the train loss for every trainable variable, at the agent's current state."""
    return agent.runner.gradients(batch)


# ----------------------------------------------------------------------------------------- compare

STOCH = ("out/stoch", "out/img/stoch", "policy/out/stoch", "train1/replay/dyn/stoch")


def discrete_terms(meta: dict) -> set[str]:
    """Terms that are samples of categoricals: latent one-hots and discrete actions, compared exactly."""
    terms = set(STOCH)
    for key, (_, _, classes) in meta["config"]["act"].items():
        if classes:
            terms |= {f"out/img/action/{key}", f"out/imag/act/{key}", f"policy/out/act/{key}"}
    return terms


def error(ours_value: np.ndarray, official: np.ndarray) -> tuple[float, float]:
    """(relative L2 error, largest absolute error); the relative error of an all-zero official value is
    0 if ours is all zero too, else infinite."""
    a, b = np.asarray(ours_value, np.float64), np.asarray(official, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} against the official {b.shape}")
    diff = a - b
    norm = float(np.linalg.norm(b))
    absolute = float(np.abs(diff).max()) if diff.size else 0.0
    relative = float(np.linalg.norm(diff)) / norm if norm > 0 else (0.0 if absolute == 0 else math.inf)
    return relative, absolute


def compare(fixture: dict, result: dict[str, np.ndarray]) -> list[dict]:
    """One row per official term that we compute: its relative and absolute error and whether it passes."""
    rows = []
    discrete = discrete_terms(json.loads(bytes(fixture["meta"]).decode()))
    for name in sorted(result):
        official_name = name[len("e2e/") :] if name.startswith("e2e/") else name
        if official_name not in fixture:
            continue
        official = fixture[official_name]
        relative, absolute = error(result[name], official)
        if name in discrete:
            passed = absolute < ABS_TOLERANCE  # the same samples (one-hot values, indices)
        elif official_name.startswith("update2/") and "param/" + official_name[len("update2/") :] in fixture:
            # A step of about lr / warmup moves a weight by a few float32 steps of its value, so both
            # sides' changes are rounded to that resolution (after the step: a weight may cross into
            # the next power of two). Per element: within two such steps, or within TOLERANCE of the
            # official step (whose learning rate optax computes as (0 - lr)(1 - t/T) + lr in float32,
            # about 1e-5 off lr t/T at t = 1).
            weight = np.abs(fixture["param/" + official_name[len("update2/") :]]) + np.abs(official)
            resolution = np.spacing(weight.astype(np.float32)).astype(np.float64)
            diff = np.abs(np.asarray(result[name], np.float64) - np.asarray(official, np.float64))
            bound = np.maximum(2 * resolution, TOLERANCE * np.abs(np.asarray(official, np.float64)))
            passed = relative < TOLERANCE or bool(np.all(diff <= bound))
        else:
            passed = relative < TOLERANCE
        status = "ok" if passed else "FAIL"
        if not passed and name.startswith("e2e/") and relative < E2E_TOLERANCE:
            status = (
                "explained"  # the optimizer on the official gradients is checked strictly (opt2/, update2/)
            )
        rows.append({"term": name, "relative": relative, "absolute": absolute, "status": status,
                     "passed": status != "FAIL"})  # fmt: skip
    return rows


GROUPS = [
    ("encoder tokens", ("out/tokens",)),
    ("posterior logits", ("out/post_logits",)),
    ("prior logits", ("out/prior_logits",)),
    ("posterior states", ("out/deter", "out/stoch")),
    ("reconstructions", ("out/recon/",)),
    ("reward and continue predictions", ("out/rew_pred", "out/con_prob")),
    ("loss dyn", ("out/losses/dyn",)),
    ("loss rep", ("out/losses/rep",)),
    ("loss rew", ("out/losses/rew",)),
    ("loss con", ("out/losses/con",)),
    ("loss policy", ("out/losses/policy",)),
    ("loss value", ("out/losses/value",)),
    ("loss repval", ("out/losses/repval",)),
    ("imagined states and actions", ("out/img/",)),
    (
        "imagined rewards, continues, values",
        ("out/imag/rew", "out/imag/con", "out/imag/val", "out/imag/slowval"),
    ),
    ("λ-returns (imagined, replayed)", ("out/imag/ret", "out/repl/")),
    ("return normaliser percentiles", ("out/retnorm/", "out/state/retnorm/")),
    ("advantages", ("out/advnorm/",)),
    ("actor log-probs and entropies", ("out/imag/logpi/", "out/imag/ent/")),
    ("total loss", ("out/loss",)),
    ("gradients, update 1", ("grad1/",)),
    ("gradients, update 2", ("grad2/",)),
    ("optimizer on the official gradients: momentum after update 2", ("opt2/mu/",)),
    ("optimizer on the official gradients: second moment after update 2", ("opt2/nu/",)),
    ("optimizer on the official gradients: change by update 2 (LaProp, AGC, warm-up)", ("update2/",)),
    ("end to end: momentum after update 2", ("e2e/opt2/mu/",)),
    ("end to end: second moment after update 2", ("e2e/opt2/nu/",)),
    ("end to end: change by update 2", ("e2e/update2/",)),
    ("slow critic change by update 2", ("update2/slowval/",)),
    ("replay latents written back", ("train1/replay/",)),
    ("policy step: actions and carry", ("policy/out/",)),
]


def summarise(rows: list[dict], fixture: dict) -> list[dict]:
    """Rows grouped as in the report table; the decoder keys' losses get their own rows."""
    groups = list(GROUPS)
    for name in sorted(fixture):
        if name.startswith("out/losses/") and name.split("/")[-1] not in (
            "dyn", "rep", "rew", "con", "policy", "value", "repval",
        ):  # fmt: skip
            groups.insert(7, (f"loss {name.split('/')[-1]} (decoder)", (name,)))

    def match(term: str, prefix: str) -> int:
        """Length of ``prefix`` if it names ``term`` (exactly, or as a folder ending in /), else -1."""
        return len(prefix) if term == prefix or (prefix.endswith("/") and term.startswith(prefix)) else -1

    members: dict[str, list[dict]] = {label: [] for label, _ in groups}
    for row in rows:  # each term in the group of its most specific prefix
        best = max(((match(row["term"], p), label) for label, prefixes in groups for p in prefixes))
        if best[0] >= 0:
            members[best[1]].append(row)
    table = []
    for label, _ in groups:
        group = members[label]
        if not group:
            continue
        worst = max(group, key=lambda r: r["relative"] if math.isfinite(r["relative"]) else 1e9)
        table.append({
            "group": label, "terms": len(group), "relative": max(r["relative"] for r in group),
            "absolute": max(r["absolute"] for r in group), "worst": worst["term"],
            "passed": all(r["passed"] for r in group),
            "status": "FAIL" if any(r["status"] == "FAIL" for r in group)
            else "explained" if any(r["status"] == "explained" for r in group) else "ok",
        })  # fmt: skip
    return table


# ------------------------------------------------------------------------------------------- driver


def load_fixture(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def compare_file(path: str | Path) -> dict:
    """Our side against one official output file on the current backend."""
    import keras

    fixture = load_fixture(path)
    meta = json.loads(bytes(fixture["meta"]).decode())
    rows = compare(fixture, ours(fixture))
    return {
        "case": meta["case"], "backend": keras.backend.backend(), "rows": rows,
        "table": summarise(rows, fixture), "passed": all(r["passed"] for r in rows),
    }  # fmt: skip


VERDICT = {"ok": "yes", "explained": "explained: near-zero gradient elements, see docs/parity.md"}


def markdown(reports: list[dict]) -> str:
    lines = []
    for report in reports:
        lines.append(f"\n{report['case']} on {report['backend']}:\n")
        lines.append("| term | values | max relative error | max absolute error | within tolerance |")
        lines.append("|---|---|---|---|---|")
        for row in report["table"]:
            lines.append(
                f"| {row['group']} | {row['terms']} | {row['relative']:.1e} | {row['absolute']:.1e} | "
                f"{VERDICT.get(row['status'], 'NO: ' + row['worst'])} |"
            )
    return "\n".join(lines)


def overview(reports: list[dict]) -> str:
    """One table for all reports: a row per term group, a column per case and backend (max relative error)."""
    columns = [f"{r['case']}, {r['backend']}" for r in reports]
    labels: list[str] = []
    for report in reports:
        labels += [row["group"] for row in report["table"] if row["group"] not in labels]
    lines = ["| term | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label in labels:
        cells = []
        for report in reports:
            row = next((r for r in report["table"] if r["group"] == label), None)
            mark = {"ok": "", "explained": " (e)"}.get(row["status"], " FAIL") if row else ""
            cells.append(f"{row['relative']:.1e}{mark}" if row else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup", help="clone-free setup: a virtual environment for the official code")
    setup.add_argument("--venv", required=True)
    setup.add_argument(
        "--jax",
        type=jax_version,
        default=None,
        metavar="VERSION",
        help="install this JAX instead of the official pin 0.4.33 (for vs_official.py only: the parity "
        "fixtures come from 0.4.33)",
    )
    run = commands.add_parser("run", help="run the official side, then compare ours on each backend")
    run.add_argument(
        "--official", required=True, help=f"checkout of danijar/dreamerv3 (tested at {OFFICIAL_COMMIT})"
    )
    run.add_argument("--venv", required=True, help="the official code's virtual environment")
    run.add_argument("--cases", nargs="+", default=["tiny_disc", "tiny_cont", "size1m_proprio"])
    run.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    run.add_argument("--out", default="parity", help="folder for the official outputs and the report")
    cmp = commands.add_parser(
        "compare", help="compare ours on the current backend with saved official outputs"
    )
    cmp.add_argument("files", nargs="+")
    cmp.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    if args.command == "setup":
        if subprocess.run([sys.executable, "-m", "venv", args.venv]).returncode:
            print(f"error: could not make a virtual environment in {args.venv} (see above)", file=sys.stderr)
            return 2
        pip = [str(Path(args.venv) / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        requirements = official_requirements(args.jax)
        if subprocess.run(pip + requirements).returncode:
            print(f"error: pip could not install {' '.join(requirements)} into {args.venv} (see above)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"[parity] official environment ready: {args.venv}")
        return 0

    if args.command == "compare":
        reports = [compare_file(path) for path in args.files]
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=1))
        print(markdown(reports))
        return 0 if all(r["passed"] for r in reports) else 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    python = str(Path(args.venv) / "bin" / "python")
    if not Path(python).exists():
        print(f"[parity] no Python in {args.venv}; make it with: python benchmarks/parity.py setup --venv {args.venv}",
              file=sys.stderr)  # fmt: skip
        return 2
    commit = subprocess.run(
        ["git", "-C", args.official, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    files = []
    for case in args.cases:
        path = out / f"{case}.npz"
        print(f"[parity] official side of {case} (official commit {commit or 'unknown'})", file=sys.stderr)
        command = [
            python,
            str(OFFICIAL_SIDE),
            "--official",
            args.official,
            "--case",
            case,
            "--out",
            str(path),
        ]
        official_path = os.pathsep.join(
            p for p in (str(Path(args.official).resolve()), os.environ.get("PYTHONPATH", "")) if p
        )
        subprocess.run(
            command, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": official_path}
        )
        files.append(str(path))
    reports = []
    for backend in args.backends:
        report = out / f"report_{backend}.json"
        env = {**os.environ, "KERAS_BACKEND": backend}
        subprocess.run(
            [sys.executable, "-m", "dreamer_tf.harness.parity", "compare", *files, "--json", str(report)],
            env=env,
        )
        reports += json.loads(report.read_text())
    text = overview(reports)
    (out / "report.md").write_text(f"Official commit {commit}.\n\n{text}\n\n{markdown(reports)}\n")
    print(text)
    return 0 if all(r["passed"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
