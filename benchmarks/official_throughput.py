"""The official side of vs_official.py: time danijar/dreamerv3's train step on a synthetic batch.

    PYTHONPATH=OFFICIAL OFFICIAL_PYTHON benchmarks/official_throughput.py --official OFFICIAL \
        --preset size1m --workload dummy --updates 10

Runs inside the official code's own virtual environment and imports nothing from dreamer_tf. It
builds the official agent (its ``embodied.jax.Agent`` wrapper, jitted as in training) for one preset
and workload, feeds it random batches of the workload's spaces, and times ``agent.train`` after the
first (compiling) call: the same measurement as ``benchmarks/throughput.py`` makes of ours. Prints one
JSON line: updates per second and per CPU-second, start-up (process start to the first update done),
peak RSS and the parameter count.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Observation and action spaces of each workload: the official dummy task's image, vector and 2-D
# float (as ours: dreamer_tf/harness/throughput.py) with five discrete actions; or dmc_cartpole_balance.
WORKLOADS = {
    "dummy": {
        "obs": {
            "image": (np.uint8, (64, 64, 3)),
            "vector": (np.float32, (7,)),
            "float2d": (np.float32, (4, 5)),
        },
        "act": (np.int32, (), 5),
    },
    "vector": {
        "obs": {"vector": (np.float32, (7,)), "float2d": (np.float32, (4, 5))},
        "act": (np.int32, (), 5),
    },
    "dmc_proprio": {
        "obs": {"position": (np.float32, (3,)), "velocity": (np.float32, (2,))},
        "act": (np.float32, (1,), None),
    },
}


# jax.jit's options in the order JAX 0.4 took them by position, as the official code passes them.
JIT_OPTIONS = (
    "in_shardings",
    "out_shardings",
    "static_argnums",
    "static_argnames",
    "donate_argnums",
    "donate_argnames",
)


def jit_by_position(jax) -> bool:
    """Let the official code run on a JAX whose ``jax.jit`` takes its options by keyword only (0.5
    and later; the official pins 0.4.33): ``jax.jit`` then maps positional options to their names.
    Returns whether it had to. The same program is traced either way."""
    params = inspect.signature(jax.jit).parameters.values()
    if not any(p.kind is p.KEYWORD_ONLY for p in params):
        return False
    jit = jax.jit

    @functools.wraps(jit)
    def positional(fun, *options, **kwargs):
        if len(options) > len(JIT_OPTIONS):
            raise TypeError(f"jax.jit takes at most {len(JIT_OPTIONS)} positional options")
        kwargs.update(zip(JIT_OPTIONS, options))
        return jit(fun, **kwargs)

    jax.jit = positional
    return True


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", required=True, help="checkout of danijar/dreamerv3")
    parser.add_argument("--preset", default="size1m", help="a size preset of the official configs.yaml")
    parser.add_argument("--workload", default="dummy", choices=sorted(WORKLOADS))
    parser.add_argument("--updates", type=int, default=10, help="timed updates after the first")
    parser.add_argument("--platform", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, nargs=2, default=(16, 64), metavar=("SIZE", "LENGTH"))
    args = parser.parse_args()
    if not (Path(args.official) / "dreamerv3" / "agent.py").exists():
        raise SystemExit(f"--official {args.official}: not a checkout of danijar/dreamerv3")

    import jax

    shimmed = jit_by_position(jax)  # before the official modules take jax.jit
    import dreamerv3.agent as official
    import elements
    import embodied.jax.internal as internal
    import ruamel.yaml as yaml

    configs = yaml.YAML(typ="safe").load((Path(args.official) / "dreamerv3" / "configs.yaml").read_text())
    config = elements.Config(configs["defaults"]).update(configs[args.preset])
    B, T = args.batch
    logdir = tempfile.mkdtemp(prefix="official_throughput_")
    config = config.update(
        {"jax.platform": args.platform, "jax.compute_dtype": args.precision, "jax.prealloc": False,
         "batch_size": B, "batch_length": T, "logdir": logdir}
    )  # fmt: skip
    agent_config = elements.Config(
        **config.agent, logdir=logdir, seed=0, jax=config.jax, batch_size=B, batch_length=T,
        replay_context=config.replay_context, report_length=config.report_length, replica=0, replicas=1,
    )  # fmt: skip
    work = WORKLOADS[args.workload]
    obs_space = {k: elements.Space(dtype, shape) for k, (dtype, shape) in work["obs"].items()}
    obs_space["reward"] = elements.Space(np.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        obs_space[key] = elements.Space(bool)
    dtype, shape, classes = work["act"]
    if classes:
        act_space = {"action": elements.Space(dtype, shape, 0, classes)}
    else:
        act_space = {"action": elements.Space(dtype, shape, -1.0, 1.0)}

    # Start JAX's CPU backend now, with this process's XLA_FLAGS (vs_official.py's one thread): the
    # official setup replaces XLA_FLAGS with its GPU flags before the backend would otherwise start.
    jax.devices()
    build = time.perf_counter()
    agent = official.Agent(obs_space, act_space, agent_config)
    build_s = time.perf_counter() - build
    params = sum(int(np.prod(v.shape)) for k, v in agent.params.items() if not k.startswith("opt/"))

    rng = np.random.default_rng(0)
    length = T + config.replay_context

    def batch(counter: int) -> dict:
        data = {}
        for key, space in agent.spaces.items():
            size = (B, length, *space.shape)
            if space.dtype == bool:
                data[key] = rng.random(size) < (0.01 if key == "is_first" else 0.0)
            elif np.issubdtype(space.dtype, np.integer):
                low, high = int(np.min(space.low)), int(np.max(space.high))
                data[key] = rng.integers(low, high, size).astype(space.dtype)
            elif key.endswith("stoch"):  # one-hot latents of the replay context
                data[key] = np.eye(space.shape[-1], dtype=space.dtype)[
                    rng.integers(0, space.shape[-1], size[:-1])
                ]
            else:
                data[key] = (0.1 * rng.normal(size=size)).astype(space.dtype)
        data["consec"] = np.zeros((B, length), np.int32)
        data = internal.device_put(data, agent.train_sharded)
        return {**data, "seed": agent._seeds(counter, agent.train_mirrored)}

    batches = [batch(i) for i in range(4)]
    carry = agent.init_train(B)
    compile_start = time.perf_counter()
    carry, _, _ = agent.train(carry, dict(batches[0]))
    jax.block_until_ready(carry)
    compile_s = time.perf_counter() - compile_start
    startup_s = process_age_s()
    carry, _, _ = agent.train(carry, dict(batches[1]))
    jax.block_until_ready(carry)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(args.updates):
        carry, _, mets = agent.train(carry, dict(batches[i % len(batches)]))
    jax.block_until_ready((carry, agent.params))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {
        "side": "official",
        "preset": args.preset,
        "workload": args.workload,
        "param_count": params,
        "updates_timed": args.updates,
        "updates_per_s": round(args.updates / wall, 4),
        "updates_per_cpu_s": round(args.updates / cpu, 4),
        "startup_s": round(startup_s, 1),
        "build_s": round(build_s, 2),
        "compile_s": round(compile_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "precision": args.precision,
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "jit_by_position": shimmed,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
