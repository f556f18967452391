"""Training and acting throughput of the DreamerV3 agent on a synthetic workload.

The workload mirrors the official dummy task: a 64×64×3 image plus vectors,
five discrete actions, replayed batches of 16 × 64 (+ replay context); ``--vector-only``
drops the image (the workload of BSuite and DMC proprio); ``--workload dmc_proprio`` has the spaces
of ``dmc_cartpole_balance`` (position and velocity vectors, one continuous action).

    python benchmarks/throughput.py --configs size12m --json
    python benchmarks/throughput.py --configs size1m --backend jax --precision bfloat16 --json

Prints progress on stderr and, with ``--json``, one JSON line on stdout with
``param_count``, ``updates_per_s``, ``updates_per_cpu_s`` (per second of this process's CPU time),
``startup_s`` (process start to the first update done), ``policy_steps_per_s``, ``peak_rss_mb``,
``backend``, ``precision``, ``device`` and the timing details (``compile_cache_hits``: programs JAX
loaded from its compilation cache; none unless ``--compile.cache DIR`` is given, so that
``compile_s`` times a compilation), and the distance to the hardware:
``flops_per_update`` (XLA's cost analysis of the update traced on JAX with unrolled time loops; on
TensorFlow the same model is counted in a JAX subprocess, the maths being the same), the achieved
``tflops_per_s`` and, where the device's peak is known (a table of GPUs, or ``--peak-tflops``),
``peak_tflops_per_s`` and ``utilisation``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# Dense peak TFLOP/s by device name (vendor data sheets; SXM parts), float32 and 16-bit matmuls.
PEAK_TFLOPS = {
    "H200": {"float32": 67.0, "bfloat16": 989.0, "float16": 989.0},
    "H100": {"float32": 67.0, "bfloat16": 989.0, "float16": 989.0},
    "A100": {"float32": 19.5, "bfloat16": 312.0, "float16": 312.0},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="*", default=["size12m"], help="presets to stack (default size12m)"
    )
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default=None, help="Keras backend")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16", "float16"], default=None)
    parser.add_argument("--updates", type=int, default=10, help="timed train updates (after compiling)")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="time train updates for at least this long"
    )
    parser.add_argument("--envs", type=int, default=16, help="environments per policy call")
    parser.add_argument("--policy-steps", type=int, default=50, help="timed policy calls")
    parser.add_argument("--xla", action="store_true", help="TensorFlow: compile with XLA (jit_compile)")
    parser.add_argument(
        "--workload",
        choices=["dummy", "vector", "dmc_proprio"],
        default="dummy",
        help="dummy: image, vectors and 5 discrete actions (default); vector: the same without the "
        "image; dmc_proprio: dmc_cartpole_balance's position and velocity and 1 continuous action",
    )
    parser.add_argument("--vector-only", action="store_true", help="the same as --workload vector")
    parser.add_argument(
        "--no-flops", dest="flops", action="store_false", help="skip counting the FLOPs of an update"
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="count the FLOPs of an update, time nothing"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak, if not in the table"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="trace 3 more updates into DIR and print where their time goes, by loop and by layer "
        "(dreamer_tf/harness/profile.py)",
    )
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    if args.profile is not None:
        # A new or empty folder: the breakdown reads the trace and program dump found there.
        if args.profile.exists() and (not args.profile.is_dir() or any(args.profile.iterdir())):
            parser.error(f"--profile {args.profile}: give a new or empty folder")
        try:
            args.profile.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--profile {args.profile}: cannot create it ({error.strerror or error})")
    if args.vector_only:
        args.workload = "vector"
    args.vector_only = args.workload == "vector"
    return args


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc; None elsewhere)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.profile is not None and os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        from dreamer_tf.harness import profile

        # Read when JAX starts, so before anything imports it; first, because XLA stops reading
        # at a word without "--", so a stray word in the caller's flags cannot hide these.
        os.environ["XLA_FLAGS"] = (
            f"{profile.xla_flags(args.profile)} {os.environ.get('XLA_FLAGS', '')}".strip()
        )

    import numpy as np

    from dreamer_tf.lean_imports import without_keras_extras

    with without_keras_extras():  # as a training process imports Keras
        from dreamer_tf import backend
        from dreamer_tf.config import load_config
        from dreamer_tf.dreamerv3.agent import Agent
        from dreamer_tf.spaces import Space

    overrides = list(args.overrides)
    if args.precision:
        overrides += ["--compile.precision", args.precision]
    if args.xla:
        overrides += ["--compile.xla", "true"]
    if not any(item.split("=")[0] == "--compile.cache" for item in overrides):
        overrides += ["--compile.cache", "none"]  # a benchmark times a compilation unless told otherwise
    config = load_config(args.configs, overrides)
    cache = backend.prepare_process(config.compile.cache)
    cache_hits = backend.compilation_cache_hits()
    obs_space = {
        "image": Space(np.uint8, (64, 64, 3)),
        "vector": Space(np.float32, (7,)),
        "float2d": Space(np.float32, (4, 5)),
        "reward": Space(np.float32),
        "is_first": Space(bool),
        "is_last": Space(bool),
        "is_terminal": Space(bool),
    }
    if args.workload != "dummy":
        del obs_space["image"]
    act_space = {"action": Space(np.int32, (), 0, 5)}
    if args.workload == "dmc_proprio":
        for key in ("vector", "float2d"):
            del obs_space[key]
        obs_space.update(position=Space(np.float32, (3,)), velocity=Space(np.float32, (2,)))
        act_space = {"action": Space(np.float32, (1,), -1.0, 1.0)}
    continuous = act_space["action"].dtype == np.float32

    start = time.perf_counter()
    agent = Agent(obs_space, act_space, config)
    backend.release_build_memory()
    build_s = time.perf_counter() - start
    log(agent.param_summary())

    rng = np.random.default_rng(0)
    B, T = config.batch_size, config.batch_length + config.replay_context
    dyn = config.agent.dyn

    def make_batch() -> dict:
        return only_known(
            {
                "image": rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8),
                "vector": rng.normal(size=(B, T, 7)).astype(np.float32),
                "float2d": rng.normal(size=(B, T, 4, 5)).astype(np.float32),
                "position": rng.normal(size=(B, T, 3)).astype(np.float32),
                "velocity": rng.normal(size=(B, T, 2)).astype(np.float32),
                "reward": rng.normal(size=(B, T)).astype(np.float32),
                "is_first": rng.random((B, T)) < 0.01,
                "is_last": np.zeros((B, T), bool),
                "is_terminal": np.zeros((B, T), bool),
                "action": rng.uniform(-1, 1, (B, T, 1)).astype(np.float32)
                if continuous
                else rng.integers(0, 5, (B, T)).astype(np.int32),
                "dyn/deter": rng.normal(size=(B, T, dyn.deter)).astype(np.float32) * 0.1,
                "dyn/stoch": rng.integers(0, dyn.classes, (B, T, dyn.stoch)).astype(np.int32),
                "stepid": np.arange(B * T, dtype=np.int64).reshape(B, T),
            }
        )

    def only_known(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k in obs_space or "/" in k or k in ("action", "stepid")}

    batches = [make_batch() for _ in range(4)]
    flops = None
    if args.flops or args.flops_only:
        log("counting the FLOPs of an update ...")
        try:
            flops = count_flops(agent, batches[0], args)
        except RuntimeError as error:  # e.g. TensorFlow without JAX installed: time the rest anyway
            if args.flops_only:
                raise
            log(f"FLOPs not counted: {error}")
    if args.flops_only:
        result = {"flops_per_update": flops}
        if args.json:
            print(json.dumps(result), flush=True)
        return result
    log(f"compiling the train step ({backend.backend()}, {agent.precision}) ...")
    start = time.perf_counter()
    agent.train(batches[0])
    compile_s = time.perf_counter() - start
    startup_s = process_age_s()
    loaded = f" (loaded from the compilation cache {cache})" if cache_hits else ""
    log(f"compiled in {compile_s:.1f}s{loaded}; timing {args.updates} updates ...")
    agent.train(batches[1])  # a second call catches retracing
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while count < args.updates or time.perf_counter() - start < args.seconds:
        metrics, _ = agent.train(batches[count % len(batches)])
        count += 1
    train_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    assert np.isfinite(metrics["opt/loss"]), metrics
    breakdown = None
    if args.profile is not None:
        from dreamer_tf.harness import profile

        log(f"tracing 3 updates into {args.profile} ...")
        with backend.trace(str(args.profile / "trace")):
            for i in range(3):
                agent.train(batches[i % len(batches)])  # returns host values: the update has finished
        steps = {
            T: "observing the replayed sequences",
            config.batch_length: "observing the replayed sequences",
        }
        steps[config.agent.imag_length] = "imagination"
        breakdown = profile.breakdown(args.profile, 3, steps)
        log(profile.format_breakdown(breakdown))

    n = args.envs
    obs = only_known(
        {
            "image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "vector": rng.normal(size=(n, 7)).astype(np.float32),
            "float2d": rng.normal(size=(n, 4, 5)).astype(np.float32),
            "position": rng.normal(size=(n, 3)).astype(np.float32),
            "velocity": rng.normal(size=(n, 2)).astype(np.float32),
            "reward": np.zeros(n, np.float32),
            "is_first": np.zeros(n, bool),
            "is_last": np.zeros(n, bool),
            "is_terminal": np.zeros(n, bool),
        }
    )
    state = agent.init_policy(n)
    agent.policy(obs, state)
    start = time.perf_counter()
    for _ in range(args.policy_steps):
        _, state, _ = agent.policy(obs, state)
    policy_s = time.perf_counter() - start

    result = {
        "configs": args.configs,
        "vector_only": args.vector_only,
        "param_count": agent.param_count,
        "updates_per_s": round(count / train_s, 4),
        "updates_per_cpu_s": round(count / cpu_s, 4),
        "ms_per_update": round(1000 * train_s / count, 2),
        "policy_steps_per_s": round(n * args.policy_steps / policy_s, 1),
        "policy_calls_per_s": round(args.policy_steps / policy_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "backend": backend.backend(),
        "precision": agent.precision,
        "device": backend.device_name(),
        "batch": [B, config.batch_length],
        "build_s": round(build_s, 2),
        "compile_s": round(compile_s, 2),
        "compile_cache": None if cache_hits is None else cache,
        "compile_cache_hits": None if cache_hits is None else len(cache_hits),
        "startup_s": None if startup_s is None else round(startup_s, 1),
        "workload": args.workload,
        "updates_timed": count,
    }
    if breakdown is not None:
        result["profile"] = breakdown
    if flops is not None:
        result.update(
            hardware_use(flops, count / train_s, result["device"], agent.precision, args.peak_tflops)
        )
    log(
        f"{result['param_count']:,} params | {result['updates_per_s']} updates/s "
        f"({result['ms_per_update']} ms) | {result['policy_steps_per_s']} policy steps/s | "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    if flops is not None:
        use = f", {100 * result['utilisation']:.1f}% of its peak" if "utilisation" in result else ""
        log(f"{flops / 1e9:.2f} GFLOP per update, {result['tflops_per_s']:.4f} TFLOP/s achieved{use}")
    if args.json:
        print(json.dumps(result), flush=True)
    return result


def count_flops(agent, batch: dict, args: argparse.Namespace) -> float:
    """FLOPs of one update: on JAX from this agent, on TensorFlow from this workload in a JAX subprocess."""
    from dreamer_tf import backend

    if backend.backend() == "jax":
        return agent.runner.train_flops(agent.train_inputs(batch))
    return jax_flops(args.configs, args.overrides, args.workload, args.precision)


def jax_flops(
    configs: list[str], overrides: list[str], workload: str = "dummy", precision: str | None = None
) -> float:
    """FLOPs of one update of this workload, counted by ``--flops-only`` in a JAX subprocess."""
    command = [
        sys.executable,
        "-m",
        "dreamer_tf.harness.throughput",
        "--backend",
        "jax",
        "--flops-only",
        "--json",
    ]
    command += ["--configs", *configs, "--workload", workload]
    command += ["--precision", precision] if precision else []
    command += list(overrides)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"counting FLOPs on JAX failed (exit {done.returncode}): {done.stderr[-500:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["flops_per_update"])


def hardware_use(flops: float, updates_per_s: float, device: str, precision: str, peak: float | None) -> dict:
    """Achieved TFLOP/s, and the device's peak and the fraction reached where the peak is known."""
    out = {"flops_per_update": flops, "tflops_per_s": flops * updates_per_s / 1e12}
    if peak is None:
        peak = next((p.get(precision) for name, p in PEAK_TFLOPS.items() if name in device), None)
    if peak:
        out.update({"peak_tflops_per_s": peak, "utilisation": out["tflops_per_s"] / peak})
    return out


def cli(argv: list[str] | None = None) -> int:
    """The console entry point: ``main`` prints its result; the exit status is 0."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
