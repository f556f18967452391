"""Export a run's policy alone as a TensorFlow SavedModel: ``python -m dreamer_tf.export``.

    python -m dreamer_tf.export --logdir ~/logdir/walker --out ~/walker-policy
    dreamer-tf-export --logdir RUN --out DIR --checkpoint RUN/checkpoint/latest

The SavedModel holds the encoder, the RSSM's observe step and the actor of a DreamerV3 run (the
per-step policy with its recurrent carry), read from the run's latest checkpoint (or the one given)
without writing anything in the run folder. It loads with TensorFlow alone:

    policy = tf.saved_model.load(DIR + "/saved_model")
    out = policy.signatures["serving_default"](obs_vector=..., is_first=..., deter=..., stoch=...,
                                               prev_action=..., stoch_noise=..., action_noise=...)
    # out["action_<key>"], and the next carry out["deter"], out["stoch"], out["prev_action"]

``DIR/policy.json`` lists every input and output with its shape and dtype, the initial carry
(zeros; also the ``initial_carry`` signature) and how to draw the noise; ``DIR/README.txt`` says the
same in words. Given the same observations, carry and noise the SavedModel returns the agent's own
actions and carry (``Agent.policy(..., noise=...)``). Signatures: ``serving_default`` (= ``policy``,
sampled actions), ``policy_greedy`` (the actor's mode; the action noise is ignored) and
``initial_carry``.

There is no Keras-format (``.keras``) export: that format stores a model's config and rebuilds it from
its classes when loaded, so loading would need dreamer_tf's layers, which is what an export is for
not needing; and the policy is a step function of (observations, carry, noise), not a Keras model.

The export always runs on the TensorFlow backend in float32: started with another
``KERAS_BACKEND`` (a run trained on JAX), the command runs itself again with
``KERAS_BACKEND=tensorflow``; checkpoints hold plain arrays, so the weights load either way.

Exit codes: 0 done, 2 a problem the user can fix (missing run folder, no or corrupt checkpoint, a
non-empty --out, an agent without this export: one line, nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from dreamer_tf.config import ConfigError
from dreamer_tf.run.evaluate import EvalError, load_checkpoint, load_run_config

SAVED_MODEL = "saved_model"
SPEC_FILE = "policy.json"
README_FILE = "README.txt"


class ExportError(RuntimeError):
    """A problem the user can fix; the message is one line."""


def _name(prefix: str, key: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]+", "_", key)


def _noise_layout(act_space: dict[str, Any]) -> list[dict[str, Any]]:
    """The action noise vector's parts, in the actor's order (``ActorCritic.draw_noise``)."""
    parts, offset = [], 0
    for key in sorted(act_space):
        space = act_space[key]
        size = space.classes if space.discrete else math.prod(space.shape)
        kind = "gumbel" if space.discrete else "normal"
        parts.append({"action": key, "slice": [offset, offset + size], "distribution": kind})
        offset += size
    return parts


def export_policy(
    logdir: str | Path, out: str | Path, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Write the SavedModel, ``policy.json`` and ``README.txt`` to ``out``; returns the spec.

    Must run on the TensorFlow backend (``main`` sees to it). Raises ``EvalError`` / ``ExportError``
    (nothing written) for a missing run or checkpoint, a non-empty ``out`` or a non-DreamerV3 run.
    """
    import keras

    from dreamer_tf import backend, envs
    from dreamer_tf.run.train import resolve_agent

    logdir = Path(logdir).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    config = load_run_config(logdir)
    if config.agent_name != "dreamerv3":
        raise ExportError(f"Export writes DreamerV3 policies; {logdir} trained '{config.agent_name}'.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} exists and is not an empty folder; choose a new one.")
    if out == logdir or logdir in out.parents:
        raise ExportError(f"--out {out} is inside the run folder; choose a folder outside it.")
    folder, state = load_checkpoint(logdir, checkpoint)
    # float32 everywhere: the export serves on CPUs as well as GPUs.
    config = config.update({"compile.precision": "float32", "compile.xla": False})
    env = envs.make(config.task, config)
    try:
        obs_space = {k: v for k, v in env.obs_space.items() if not k.startswith("log/")}
        act_space = {k: v for k, v in env.act_space.items() if k != "reset"}
    finally:
        env.close()
    agent = resolve_agent(config.agent_name)(obs_space, act_space, config)
    try:
        agent.load(state["agent"])
    except (KeyError, ValueError) as error:
        raise ExportError(f"Checkpoint {folder} does not fit the run's agent: {error}") from None
    model = agent.model
    rssm, ops = model.wm.rssm, keras.ops
    obs_keys = model.wm.encoder.veckeys + model.wm.encoder.imgkeys
    obs_names = {key: _name("obs_", key) for key in obs_keys}
    act_names = {key: _name("action_", key) for key in sorted(act_space)}
    width = model.ac.noise_size()
    carry_specs = {
        "deter": ((None, rssm.deter), "float32"),
        "stoch": ((None, rssm.stoch, rssm.classes), "float32"),
        "prev_action": ((None, width), "float32"),
    }
    inputs = {obs_names[k]: ((None, *obs_space[k].shape), obs_space[k].dtype.name) for k in obs_keys}
    inputs["is_first"] = ((None,), "bool")
    inputs.update(carry_specs)
    inputs["stoch_noise"] = ((None, rssm.stoch, rssm.classes), "float32")
    inputs["action_noise"] = ((None, width), "float32")

    def step(tensors: dict, sample: bool) -> dict:
        obs = {key: tensors[obs_names[key]] for key in obs_keys}
        obs["is_first"] = tensors["is_first"]
        carry = (tensors["deter"], tensors["stoch"], tensors["prev_action"])
        noise = (tensors["stoch_noise"], tensors["action_noise"])
        actions, carry, _ = model.policy_step(obs, carry, sample, noise)
        result = {act_names[k]: ops.cast(v, act_space[k].dtype.name) for k, v in actions.items()}
        result.update(zip(("deter", "stoch", "prev_action"), carry))
        return result

    def initial(tensors: dict) -> dict:
        carry = model.initial_carry(tensors["batch_size"])
        return dict(zip(("deter", "stoch", "prev_action"), carry))

    functions = {
        "policy": (lambda tensors: step(tensors, True), inputs),
        "policy_greedy": (lambda tensors: step(tensors, False), inputs),
        "initial_carry": (initial, {"batch_size": ((), "int32")}),
    }
    outputs = {
        act_names[k]: ((None, *act_space[k].shape), act_space[k].dtype.name) for k in sorted(act_space)
    }
    outputs.update(carry_specs)
    spec = {
        "format": 1,
        "task": config.task,
        "agent": config.agent_name,
        "env_step": int(state["loop"]["env_steps"]),
        "checkpoint": str(folder),
        "signatures": {
            "serving_default": "policy: sampled actions",
            "policy": "sampled actions",
            "policy_greedy": "the mode of each action distribution (action_noise is ignored)",
            "initial_carry": "inputs {batch_size: int32 scalar}; outputs the zero carry",
        },
        "inputs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in inputs.items()},
        "outputs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in outputs.items()},
        "observations": {obs_names[k]: k for k in obs_keys},
        "actions": {
            act_names[k]: (
                {"key": k, "discrete": True, "classes": act_space[k].classes}
                if act_space[k].discrete
                else {
                    "key": k,
                    "discrete": False,
                    "clip": [-1.0, 1.0],
                    "low": act_space[k].low.tolist(),
                    "high": act_space[k].high.tolist(),
                }
            )
            for k in sorted(act_space)
        },
        "carry": {"names": ["deter", "stoch", "prev_action"], "initial": "zeros"},
        "noise": {
            "stoch_noise": "Gumbel: -log(-log(u)), u ~ Uniform(1e-6, 1 - 1e-6), shape [B, stoch, classes]",
            "action_noise": _noise_layout(act_space),
        },
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        backend.save_tensorflow_functions(str(tmp / SAVED_MODEL), model.variables, functions, "policy")
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
        (tmp / README_FILE).write_text(_readme(spec))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec


def _readme(spec: dict[str, Any]) -> str:
    inputs = "\n".join(f"  {k}: {v['dtype']} {v['shape']}" for k, v in spec["inputs"].items())
    outputs = "\n".join(f"  {k}: {v['dtype']} {v['shape']}" for k, v in spec["outputs"].items())
    observations = ", ".join(f"{name} = observation '{key}'" for name, key in spec["observations"].items())
    return f"""DreamerV3 policy of task {spec["task"]} at env step {spec["env_step"]} ({spec["checkpoint"]}).

Load it with TensorFlow alone (dreamer_tf and Keras are not needed):

    import tensorflow as tf
    policy = tf.saved_model.load("saved_model")
    carry = policy.signatures["initial_carry"](batch_size=tf.constant(B))
    out = policy.signatures["serving_default"](**observations, is_first=..., **carry,
                                               stoch_noise=..., action_noise=...)
    carry = {{k: out[k] for k in ("deter", "stoch", "prev_action")}}

Call it once per environment step with a batch of B environments; pass is_first true on the first
step of an episode (the carry is reset inside). Shapes use None for the batch size.

Inputs:
{inputs}
Observations: {observations}.

Outputs (actions first, then the next carry):
{outputs}
Discrete actions are class indices. Continuous actions are unclipped samples in the normalised
space: clip them to [-1, 1] and map them onto the environment's bounds (policy.json lists them).

Noise (one draw per step; the same noise gives the same actions):
  stoch_noise: Gumbel noise -log(-log(u)), u ~ Uniform(1e-6, 1 - 1e-6), shape [B, stoch, classes].
  action_noise: per action key in sorted order, Gumbel noise of width `classes` for a discrete key,
  standard normal of width prod(shape) for a continuous key, concatenated (policy.json: noise).
policy_greedy takes the same inputs and returns the mode of each action distribution.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dreamer-tf-export",
        description="Write a run's DreamerV3 policy as a TensorFlow SavedModel that loads without dreamer_tf.",
        allow_abbrev=False,
    )
    parser.add_argument("--logdir", required=True, help="the run folder")
    parser.add_argument("--out", required=True, help="a new (or empty) folder for the export")
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dreamer_tf.export`` and the ``dreamer-tf-export`` script."""
    from dreamer_tf.envs import UnknownTaskError
    from dreamer_tf.envs.wrappers import MissingPackageError
    from dreamer_tf.run.train import AgentUnavailableError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != "tensorflow":
        # The SavedModel is TensorFlow's format; a run trained on JAX loads its arrays there too.
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        return subprocess.run(
            [sys.executable, "-m", "dreamer_tf.export", *argv], env=env, check=False
        ).returncode
    try:
        spec = export_policy(args.logdir, args.out, args.checkpoint)
    except (
        EvalError,
        ExportError,
        ConfigError,
        UnknownTaskError,
        MissingPackageError,
        AgentUnavailableError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Exported the policy of {spec['task']} at env step {spec['env_step']} to "
        f"{Path(args.out).expanduser() / SAVED_MODEL} (inputs and outputs: {SPEC_FILE}, {README_FILE})."
    )
    return 0
