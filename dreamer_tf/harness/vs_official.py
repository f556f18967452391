"""Ours against the official danijar/dreamerv3, side by side on the same machine and workloads.

    python benchmarks/parity.py setup --venv ~/dreamerv3-venv        # the official environment, once
    git clone https://github.com/danijar/dreamerv3 ~/dreamerv3 && git -C ~/dreamerv3 checkout e3f0224
    python benchmarks/vs_official.py --official ~/dreamerv3 --venv ~/dreamerv3-venv
    # the official code on our JAX instead of its pinned one: one compiler on both sides
    python benchmarks/parity.py setup --venv ~/dreamerv3-venv-jax0.10 --jax 0.10.2
    python benchmarks/vs_official.py --official ~/dreamerv3 --venv ~/dreamerv3-venv-jax0.10 --sides jax official

Each measurement is one process that builds an agent, compiles its train step on a random batch of
the workload's spaces and times the updates after it: ours with ``benchmarks/throughput.py`` on each
Keras backend, the official one with ``benchmarks/official_throughput.py`` in its own virtual
environment (its pinned JAX 0.4.33; or any later JAX, on which that script passes ``jax.jit`` the
official code's positional options by name: a GPU machine's JAX, or ours for one compiler on both
sides; the table names the JAX each official process ran). A workload is a set of spaces with a size
preset of both codebases: ``dmc_proprio`` (``dmc_cartpole_balance``'s position, velocity and one continuous action) and
``dummy`` (the official dummy task's 64×64×3 image, vectors and five discrete actions), batch 16 × 64.

By default every process runs on one pinned core with one thread (``taskset``, ``OMP_NUM_THREADS``,
TensorFlow's and XLA's thread pools), so that updates per CPU-second compare the code and not the
thread pools; ``--whole-machine`` leaves both free. Repetitions are interleaved (ours, official,
official, ours, ...), so that a machine whose speed drifts treats both sides alike. Prints one
Markdown table (medians over repetitions) and writes every measurement to ``--json``.

``--cache warm`` measures what a second run of the same program sees: one unmeasured process per
workload and JAX side first fills a fresh compilation cache (ours through ``compile.cache``, the
official code through ``$JAX_COMPILATION_CACHE_DIR``, its own cache being on), and the measured
processes load their train steps from it. The default, ``cold``, compiles in every process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dreamer_tf.harness.parity import OFFICIAL_COMMIT
from dreamer_tf.harness.plan import cpu_model, gpu_names

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_SIDE = ROOT / "benchmarks" / "official_throughput.py"
SIDES = ("tensorflow", "jax", "official")
# Timed updates per process after the compiling one, by preset, on a CPU (--updates overrides).
CPU_UPDATES = {"size1m": 12, "size12m": 2}
DEFAULT_WORKLOADS = ("dmc_proprio:size1m", "dummy:size1m", "dummy:size12m")
WORKLOADS = ("dmc_proprio", "dummy", "vector")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--official", required=True, help=f"checkout of danijar/dreamerv3 (measured at {OFFICIAL_COMMIT})"
    )
    parser.add_argument(
        "--venv", required=True, help="the official code's environment (benchmarks/parity.py setup)"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=list(DEFAULT_WORKLOADS),
        help="WORKLOAD:PRESET pairs; workloads: " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--reps", type=int, default=2, help="processes per side and workload")
    parser.add_argument("--updates", type=int, default=None, help="timed updates per process")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default=None,
                        help="default: float32 on a CPU, bfloat16 on a GPU")  # fmt: skip
    parser.add_argument("--core", type=int, default=0, help="the core every process is pinned to")
    parser.add_argument("--whole-machine", action="store_true", help="no pinning and default thread pools")
    parser.add_argument(
        "--ours-flags", default="", help="config overrides for ours, e.g. '--compile.unroll true'"
    )
    parser.add_argument(
        "--cache",
        choices=["cold", "warm"],
        default="cold",
        help="cold: every JAX process compiles its train step; warm: one unmeasured process per "
        "workload and JAX side first fills a fresh compilation cache that the measured ones load from",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument("--json", default=None, help="write every measurement here")
    args = parser.parse_args(argv)
    for item in args.workloads:
        workload, _, preset = item.partition(":")
        if workload not in WORKLOADS or not preset:
            parser.error(
                f"--workloads {item}: expected WORKLOAD:PRESET with WORKLOAD one of {', '.join(WORKLOADS)}"
            )
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def thread_env(whole_machine: bool) -> dict[str, str]:
    """Environment variables that hold TensorFlow, XLA and OpenMP to one thread (none: machine-wide)."""
    if whole_machine:
        return {}
    return {
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    }


def command(
    side: str,
    workload: str,
    preset: str,
    updates: int,
    precision: str,
    args: argparse.Namespace,
    cache: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one measurement; ``cache``: JAX's compilation cache directory."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **thread_env(args.whole_machine)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if side == "official":
        python = str(Path(args.venv) / "bin" / "python")
        line = [python, str(OFFICIAL_SIDE), "--official", str(args.official), "--preset", preset,
                "--workload", workload, "--updates", str(updates), "--precision", precision,
                "--platform", "cuda" if gpu_names() else "cpu"]  # fmt: skip
        env["PYTHONPATH"] = str(Path(args.official).resolve())
        if not gpu_names():
            env["JAX_PLATFORMS"] = "cpu"
        if cache:  # the official code turns JAX's cache on; the variable gives it a directory
            env["JAX_COMPILATION_CACHE_DIR"] = cache
    else:
        line = [sys.executable, "-m", "dreamer_tf.harness.throughput", "--backend", side, "--configs", preset,
                "--workload", workload, "--updates", str(updates), "--precision", precision,
                "--policy-steps", "0", "--no-flops", "--json", *args.ours_flags.split()]  # fmt: skip
        if cache and side == "jax":
            line += ["--compile.cache", cache]
        env["KERAS_BACKEND"] = side
    if not args.whole_machine and shutil.which("taskset"):
        line = ["taskset", "-c", str(args.core), *line]
    return line, env


def measure(line: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run one measurement: its JSON result, or the error with the end of its output."""
    start = time.perf_counter()
    try:
        done = subprocess.run(line, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no JSON line in its output: {done.stdout.strip()[-200:]}"}
    return {**result, "process_wall_s": round(wall, 1)}


def order(sides: list[str], rep: int) -> list[str]:
    """The sides of one repetition: forwards on even ones, backwards on odd ones (A B, B A, ...)."""
    return list(sides) if rep % 2 == 0 else list(reversed(sides))


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per workload and side: medians of the repetitions that ran, and the ratio to the official."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r["workload"], r["preset"], r["side"]) for r in results))
    for workload, preset, side in keys:
        runs = [r for r in results if (r["workload"], r["preset"], r["side"]) == (workload, preset, side)]
        good = [r for r in runs if "error" not in r]
        row: dict[str, Any] = {"workload": workload, "preset": preset, "side": side, "reps": len(good)}
        if not good:
            row["error"] = runs[-1]["error"]
            rows.append(row)
            continue
        for key in ("updates_per_s", "updates_per_cpu_s", "startup_s"):
            values = [r[key] for r in good if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
            row[f"{key}_all"] = values
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
        if good[0].get("jax"):
            row["jax"] = good[0]["jax"]
        rows.append(row)
    for row in rows:
        official = next(
            (
                o
                for o in rows
                if (o["workload"], o["preset"], o["side"]) == (row["workload"], row["preset"], "official")
            ),
            None,
        )
        for key in ("updates_per_s", "updates_per_cpu_s"):
            if official and official.get(key) and row.get(key):
                row[f"{key}_ratio"] = row[key] / official[key]
    return rows


def markdown(rows: list[dict[str, Any]], cpu_rate: bool) -> str:
    """The table: updates/s, updates per CPU-second, start-up, peak RSS and the ratios to the official."""
    lines = [
        "| workload | code | updates/s | updates per CPU-second | start-up to the first update | peak RSS | ours / official (per s, per CPU-s) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"tensorflow": "ours, TensorFlow", "jax": "ours, JAX", "official": "official"}

    def name(row: dict[str, Any]) -> str:
        version = row.get("jax") if row["side"] == "official" else None
        return names[row["side"]] + (f" (JAX {version})" if version else "")

    def fmt(values: list[float] | None, digits: int = 3) -> str:
        if not values:
            return "–"
        median = statistics.median(values)
        text = f"{median:.{digits}g}"
        return text + (f" ({', '.join(f'{v:.{digits}g}' for v in values)})" if len(values) > 1 else "")

    for row in rows:
        label = f"`{row['workload']}`, `{row['preset']}`"
        if "error" in row:
            lines.append(f"| {label} | {name(row)} | failed: {row['error'][:120]} | | | | |")
            continue
        ratio = "–"
        if "updates_per_s_ratio" in row:
            ratio = (
                f"{row['updates_per_s_ratio']:.2f}×, {row.get('updates_per_cpu_s_ratio', float('nan')):.2f}×"
            )
        if row["side"] == "official":
            ratio = "1"
        startup = fmt(row.get("startup_s_all"), 3)
        lines.append(
            f"| {label} | {name(row)} | {fmt(row['updates_per_s_all'])} | "
            f"{fmt(row['updates_per_cpu_s_all']) if cpu_rate else '–'} | {startup} s | "
            f"{row['peak_rss_mb'] / 1024:.2f} GB | {ratio} |"
        )
    return "\n".join(lines)


def git_commit(path: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def run_all(
    args: argparse.Namespace, header: dict[str, Any], gpu: bool, precision: str, caches: dict[str, str]
) -> list[dict[str, Any]]:
    """Every measurement, workload by workload, in interleaved repetitions (each kept in ``--json``)."""
    results: list[dict[str, Any]] = []
    for item in args.workloads:
        workload, _, preset = item.partition(":")
        updates = args.updates or (50 if gpu else CPU_UPDATES.get(preset, 4))
        for side, cache in caches.items():
            print(f"[vs_official] {workload} {preset} {side}: filling the compilation cache (not measured) ...",
                  file=sys.stderr, flush=True)  # fmt: skip
            line, env = command(side, workload, preset, 1, precision, args, cache)
            filled = measure(line, env, args.timeout)
            if "error" in filled:
                print(f"[vs_official]   {filled['error']}", file=sys.stderr, flush=True)
        for rep in range(args.reps):
            for side in order(args.sides, rep):
                line, env = command(side, workload, preset, updates, precision, args, caches.get(side))
                print(f"[vs_official] {workload} {preset} {side} rep {rep + 1}/{args.reps} ...", file=sys.stderr,
                      flush=True)  # fmt: skip
                result = measure(line, env, args.timeout)
                result.update(workload=workload, preset=preset, side=side, rep=rep)
                results.append(result)
                shown = result.get("error") or (
                    f"{result['updates_per_s']} updates/s, {result.get('updates_per_cpu_s')} per CPU-s, "
                    f"start-up {result.get('startup_s')} s, peak RSS {result['peak_rss_mb']:.0f} MB"
                )
                print(f"[vs_official]   {shown}", file=sys.stderr, flush=True)
                if side in caches and result.get("compile_cache_hits") == 0:
                    print("[vs_official]   warning: it compiled its train step; the cache did not serve it",
                          file=sys.stderr, flush=True)  # fmt: skip
                    result["cache_missed"] = True
                if args.json:  # nothing measured is lost to a later failure
                    Path(args.json).write_text(json.dumps({**header, "results": results}, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.official) / "dreamerv3" / "agent.py").exists():
        print(f"error: --official {args.official} is not a checkout of danijar/dreamerv3 (clone it: "
              f"git clone https://github.com/danijar/dreamerv3 {args.official})", file=sys.stderr)  # fmt: skip
        return 2
    if "official" in args.sides and not (Path(args.venv) / "bin" / "python").exists():
        print(f"error: --venv {args.venv} has no Python; make it with: python benchmarks/parity.py setup --venv "
              f"{args.venv}", file=sys.stderr)  # fmt: skip
        return 2
    gpu = bool(gpu_names())
    precision = args.precision or ("bfloat16" if gpu else "float32")
    machine = ", ".join(gpu_names()) if gpu else f"{cpu_model()}, {os.cpu_count()} cores"
    threads = "whole machine" if args.whole_machine else f"one thread pinned to core {args.core}"
    header = {
        "machine": machine,
        "threads": threads,
        "precision": precision,
        "ours": git_commit(ROOT),
        "official": git_commit(Path(args.official)),
        "load_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "command": "python benchmarks/vs_official.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"[vs_official] {machine}; {threads}; {precision}; ours {header['ours']}, official {header['official']}",
          file=sys.stderr)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="vs_official-cache-")) if args.cache == "warm" else None
    caches = {side: str(root / side) for side in args.sides if side != "tensorflow"} if root else {}
    header["cache"] = args.cache
    try:
        results = run_all(args, header, gpu, precision, caches)
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarise(results)
    warm = (" Compilation cache warm: each JAX process loaded its train step from a cache that one "
            "unmeasured process filled (TensorFlow has none)." if caches else "")  # fmt: skip
    print(f"Machine: {machine}; {threads}; {precision}; load {header['load_at_start']:.2f} at the start. "
          f"Ours {header['ours']}, official {header['official']}. Medians of {args.reps} interleaved "
          f"processes (each one in brackets).{warm}\n")  # fmt: skip
    print(markdown(rows, cpu_rate=not gpu))
    if args.json:
        Path(args.json).write_text(json.dumps({**header, "results": results, "rows": rows}, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
