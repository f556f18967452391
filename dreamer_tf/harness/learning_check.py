"""Does DreamerV3 learn like the paper says? Train a task with its preset, per seed, against the published curves.

    python benchmarks/learning_check.py --logdir ~/logdir/check_cartpole                  # seed 0, 100K env steps
    python benchmarks/learning_check.py --logdir DIR --seeds 0 1 --steps 5e4              # two seeds side by side
    python benchmarks/learning_check.py --logdir DIR --task dmc_walker_walk --configs dmc_proprio
    python benchmarks/learning_check.py --logdir DIR --report-only                        # curve and table only
    python benchmarks/learning_check.py --logdir DIR --max-minutes 150 --carry packs/     # across machines

Each seed is one run folder, ``<logdir>/seed<N>``, trained with the presets ``--configs`` (default
``dmc_proprio``) unchanged. The runs go in chunks: each chunk is one ``python -m dreamer_tf``
process per seed, all seeds side by side with ``--threads`` threads each (default 1), stopped with
SIGTERM after ``--chunk-minutes`` (it writes a final checkpoint); the next chunk resumes them, so a
check can be spread over several sessions or machines and an interrupted one loses at most one chunk.
On JAX the chunks share a compilation cache (``$JAX_COMPILATION_CACHE_DIR``, by default
``~/.cache/dreamer_tf/jax``), so only the first one compiles. Any ``--a.b value`` flags after the
known ones go to every training command (e.g. ``--run.envs 4``); they must be the same in every
chunk, as the CLI refuses model changes on resume.

Training episodes are what the published curves show, but with many environments in lockstep they
finish in rounds (16 envs and cartpole's 1001-step episodes: every 16,016 env steps). A resumed chunk
continues the episodes under way where the environments save their state (DMC does); elsewhere it
starts them afresh, and a chunk shorter than one round never finishes a training episode. Each chunk
also evaluates the policy every ``--eval-every`` env steps
(and when a run that was never evaluated resumes): ``--eval-eps`` episodes on separate environments,
actions sampled as in training, no training meanwhile.

With ``--carry DIR`` the runs also survive a change of machine: a seed's folder without a checkpoint
is first restored from ``DIR/seed<N>.tar.gz`` (a ``benchmarks/carry_run.py`` pack) if it exists, and
that pack is rewritten after every chunk, so keeping DIR is enough to go on elsewhere.

After every chunk it writes, into ``--out`` (default ``<logdir>/check``): ``curve.csv`` (per seed,
the training-episode score per ``--bin`` env steps, ``source`` ``train``, and each evaluation's mean
score, ``source`` ``eval``), ``summary.json`` (per seed and over seeds, at every ``--bin`` steps, our
training episodes and evaluations next to the published curves) and ``curve.png``. Published curves
are read from ``$DREAMER_REFERENCE_SCORES`` (the official ``scores/<domain>-dreamerv3.json.gz`` and
``<domain>-ppo_fixhp.json.gz``); without them the report says so and shows our curves alone.

Published DMC curves count environment frames of runs with action repeat 2 (see ``PUBLISHED_SETUP``),
where our presets step with repeat 1, so the summary reads them three ways: at the same x as
published, at the same number of agent steps, and at the same number of gradient updates.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dreamer_tf.harness import carry as carry_run
from dreamer_tf.run.metrics import read_jsonl

TASK = "dmc_cartpole_balance"
METHODS = {"DreamerV3 (published)": "dreamerv3", "PPO (published)": "ppo_fixhp"}
# How the published curves of a domain were made, where it differs from our presets. The DMC proprio
# DreamerV3 file of the official scores/ (unchanged since the official commit 423291a) was made with
# that commit's configuration: DMC action repeat 2, the logger's step multiplied by the repeat (so
# x counts frames, two per agent step), train ratio 512 per agent step with 16 x 64 batches (0.5
# updates per agent step, 0.25 per frame), 4 environments. Our dmc_proprio preset follows today's
# official one: repeat 1, train ratio 1024 (one update per agent step), 16 environments.
PUBLISHED_SETUP = {"dmc_proprio": {"frames_per_step": 2.0, "updates_per_frame": 0.25}}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--logdir", required=True, help="folder of the check; seed N runs in <logdir>/seed<N>"
    )
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--configs", nargs="+", default=["dmc_proprio"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds, trained side by side")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per training process")
    parser.add_argument("--steps", type=float, default=1e5, help="env steps to reach (default 1e5)")
    parser.add_argument("--chunk-minutes", type=float, default=5.0, help="length of one training process")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long (0: until done)")
    parser.add_argument(
        "--eval-every", type=float, default=4000, help="env steps between evaluations (0: none)"
    )
    parser.add_argument("--eval-eps", type=int, default=16, help="episodes per evaluation")
    parser.add_argument("--eval-envs", type=int, default=8, help="environments an evaluation runs on")
    parser.add_argument("--bin", type=float, default=1e4, help="env steps per point of the curve")
    parser.add_argument("--out", help="where the curve, table and plot go (default <logdir>/check)")
    parser.add_argument("--report-only", action="store_true", help="do not train; rewrite the report")
    parser.add_argument(
        "--carry",
        help="folder of carry_run.py packs, seed<N>.tar.gz: unpacked into a seed's folder that has no "
        "checkpoint yet, rewritten after every chunk",
    )
    args, extra = parser.parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if any(flag == "--seed" or flag.startswith("--seed=") for flag in extra):
        parser.error("give seeds with --seeds, not --seed")
    return args, extra


def run_dir(args: argparse.Namespace, seed: int) -> Path:
    return Path(args.logdir).expanduser() / f"seed{seed}"


def read_status(logdir: Path) -> dict:
    path = logdir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that hold TensorFlow, XLA (JAX) and BLAS to ``threads`` threads."""
    env = dict(os.environ)
    n = str(threads)
    env.update(TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    # On JAX every chunk compiles the train and policy steps again (minutes for size1m on a CPU);
    # JAX's persistent compilation cache lets the later chunks load them instead.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("~/.cache/dreamer_tf/jax").expanduser()))
    return env


def train_command(args: argparse.Namespace, extra: list[str], seed: int) -> list[str]:
    command = [sys.executable, "-m", "dreamer_tf.run.train", "--task", args.task, "--configs", *args.configs]
    command += [
        "--logdir",
        str(run_dir(args, seed)),
        "--seed",
        str(seed),
        "--run.steps",
        str(int(args.steps)),
    ]
    command += ["--run.progress", "false"]
    if args.eval_every > 0:
        command += ["--run.eval_every", str(int(args.eval_every)), "--run.eval_eps", str(args.eval_eps)]
        command += ["--run.eval_envs", str(args.eval_envs)]
    return command + extra  # last, so that a --run.* flag given here wins


def run_chunk(args: argparse.Namespace, extra: list[str], seeds: list[int], seconds: float) -> dict[int, int]:
    """One training process per seed, side by side, each stopped with SIGTERM (final checkpoint) after ``seconds``."""
    env = thread_env(args.threads)
    processes = {seed: subprocess.Popen(train_command(args, extra, seed), env=env) for seed in seeds}
    deadline = time.time() + seconds
    codes: dict[int, int] = {}
    try:
        for seed, process in processes.items():
            try:
                codes[seed] = process.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGTERM)
        for seed, process in processes.items():
            codes.setdefault(seed, process.wait())
    except KeyboardInterrupt:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait()
        raise
    return codes


def our_curve(logdir: Path, bin_size: float) -> list[dict]:
    """Mean training-episode score per ``bin_size`` env steps, ``step`` the bin's last episode (at most its end)."""
    records = read_jsonl(logdir / "scores.jsonl")
    steps = np.asarray([r["step"] for r in records], float)
    scores = np.asarray([r["episode/score"] for r in records], float)
    rows = []
    # The last bin may be partial: it is labelled with its last episode's step, not the bin's end.
    for end in np.arange(bin_size, steps.max() + bin_size if len(steps) else 0, bin_size):
        mask = (steps > end - bin_size) & (steps <= end)
        if mask.any():
            step = min(end, steps[mask].max())
            rows.append({"step": int(step), "score": float(scores[mask].mean()), "episodes": int(mask.sum())})
    return rows


def eval_curve(logdir: Path) -> list[dict]:
    """Every evaluation in ``metrics.jsonl``: ``step``, mean ``score`` and number of ``episodes``."""
    return [
        {
            "step": int(r["step"]),
            "score": float(r["eval_episode/score"]),
            "episodes": int(r.get("eval_episode/episodes", 1)),
        }
        for r in read_jsonl(logdir / "metrics.jsonl")
        if "eval_episode/score" in r
    ]


def domain_of(configs: list[str]) -> str:
    """The preset that names the published files: the first of ``configs`` that is a domain."""
    for name in configs:
        if name in ("atari100k", "dmc_proprio", "dmc_vision", "procgen", "dmlab30", "atari57"):
            return name
    return configs[0] if configs else ""


def published_curves(task: str, domain: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """``{label: [(xs, ys) per seed]}`` from ``$DREAMER_REFERENCE_SCORES``; empty when absent."""
    folder = os.environ.get("DREAMER_REFERENCE_SCORES", "")
    curves = {}
    for label, method in METHODS.items():
        path = Path(folder) / f"{domain}-{method}.json.gz"
        if not folder or not path.exists():
            continue
        try:
            with gzip.open(path, "rt") as file:
                records = json.load(file)
        except (OSError, EOFError, ValueError) as error:
            raise SystemExit(f"[check] {path} is not a readable scores file: {error}") from None
        runs = [
            (np.asarray(r["xs"], float), np.asarray(r["ys"], float)) for r in records if r["task"] == task
        ]
        if runs:
            curves[label] = runs
    return curves


def at_step(runs: list[tuple[np.ndarray, np.ndarray]], step: float) -> tuple[float, float]:
    """Mean and standard deviation over seeds of each seed's curve interpolated at ``step``."""
    values = [np.interp(step, xs, ys) for xs, ys in runs]
    return float(np.mean(values)), float(np.std(values))


def updates_per_step(logdir: Path) -> float | None:
    """Our gradient updates per env step, from the run's ``config.yaml`` (None before it exists)."""
    path = logdir / "config.yaml"
    if not path.exists():
        return None
    import yaml

    config = yaml.safe_load(path.read_text())
    return float(config["run"]["train_ratio"]) / (config["batch_size"] * config["batch_length"])


def published_xs(step: float, domain: str, updates: float | None) -> dict[str, float]:
    """Where to read a published curve for our ``step``: as published, at equal agent steps, at equal updates."""
    setup = PUBLISHED_SETUP.get(domain)
    xs = {"same_x": float(step)}
    if setup:
        xs["same_agent_steps"] = step * setup["frames_per_step"]
        if updates is not None:
            xs["same_updates"] = step * updates / setup["updates_per_frame"]
    return xs


def published_entry(label: str, runs: list, step: float, domain: str, updates: float | None) -> dict:
    """A published curve's mean and spread over seeds for our ``step``, read as ``published_xs`` says."""
    entry = {}
    for how, x in published_xs(step, domain, updates).items():
        if how != "same_x" and label != "DreamerV3 (published)":
            continue  # the setup is known for the DreamerV3 runs only
        mean, std = at_step(runs, x)
        entry[how] = {"x": int(x), "mean": round(mean, 1), "std": round(std, 1)}
    return entry


def point(row: dict, published: dict, domain: str, updates: float | None) -> dict:
    """One of our points next to each published curve."""
    result = {"step": row["step"], "score": round(row["score"], 1), "episodes": row["episodes"]}
    for label, runs in published.items():
        result[label] = {**published_entry(label, runs, row["step"], domain, updates), "seeds": len(runs)}
    return result


def spread(values: list[float]) -> dict:
    return {
        "mean": round(float(np.mean(values)), 1),
        "std": round(float(np.std(values)), 1),
        "seeds": len(values),
    }


def table(
    per_seed: dict[int, dict], published: dict, bin_size: float, domain: str, updates: float | None
) -> list[dict]:
    """One row per ``bin_size`` env steps: evaluations and training episodes over seeds, and the published curves.

    A seed's evaluation at a row is its latest one at or before the row's step (within one bin); its
    training episodes are those of the bin that ends at the row.
    """
    last = max([r["step"] for rows in per_seed.values() for r in rows["eval"] + rows["train"]] + [0])
    rows = []
    for end in np.arange(0, last + bin_size, bin_size):  # (the row at 0: the untrained policy)
        row: dict = {"step": int(end)}
        evals = []
        for rows_ in per_seed.values():
            before = [r for r in rows_["eval"] if end - bin_size < r["step"] <= end]
            if before:
                evals.append(before[-1]["score"])
        train = [
            r["score"]
            for rows_ in per_seed.values()
            for r in rows_["train"]
            if end - bin_size < r["step"] <= end
        ]
        if not evals and not train:
            continue
        if evals:
            row["eval"] = spread(evals)
        if train:
            row["train"] = spread(train)
        for label, runs in published.items():
            row[label] = published_entry(label, runs, end, domain, updates)
        rows.append(row)
    return rows


def write_report(args: argparse.Namespace, elapsed: float) -> dict:
    out = Path(args.out).expanduser() if args.out else Path(args.logdir).expanduser() / "check"
    out.mkdir(parents=True, exist_ok=True)
    domain = domain_of(args.configs)
    published = published_curves(args.task, domain)
    per_seed: dict[int, dict] = {}
    updates = None
    for seed in args.seeds:
        logdir = run_dir(args, seed)
        per_seed[seed] = {"train": our_curve(logdir, args.bin), "eval": eval_curve(logdir)}
        updates = updates if updates is not None else updates_per_step(logdir)
    with open(out / "curve.csv", "w") as file:
        file.write("seed,step,score,episodes,source\n")
        for seed, curves in per_seed.items():
            for source in ("train", "eval"):
                file.writelines(
                    f"{seed},{r['step']},{r['score']:.2f},{r['episodes']},{source}\n" for r in curves[source]
                )
    summary: dict = {
        "task": args.task,
        "configs": args.configs,
        "seeds": {},
        "check_minutes_this_call": round(elapsed / 60, 1),
        "published": "found" if published else "absent: set DREAMER_REFERENCE_SCORES to the official scores/",
        "updates_per_step": updates,
    }
    for seed, curves in per_seed.items():
        entry: dict = {"status": read_status(run_dir(args, seed)).get("status", "not started")}
        if curves["train"]:
            entry["train"] = point(curves["train"][-1], published, domain, updates)
        if curves["eval"]:
            entry["eval"] = point(curves["eval"][-1], published, domain, updates)
        summary["seeds"][str(seed)] = entry
    summary["table"] = table(per_seed, published, args.bin, domain, updates)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(per_seed, published, args, out / "curve.png")
    return summary


def plot(per_seed: dict[int, dict], published: dict, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ends = [rows[-1]["step"] for curves in per_seed.values() for rows in curves.values() if rows]
    limit = max([args.steps, *ends])
    for (label, runs), color in zip(published.items(), ("tab:blue", "tab:green")):
        start = max(xs[0] for xs, _ in runs)  # no extrapolation before the first published point
        grid = np.linspace(start, limit, 100)
        values = np.array([np.interp(grid, xs, ys) for xs, ys in runs])
        ax.plot(grid, values.mean(0), color=color, label=f"{label}, {len(runs)} seeds")
        ax.fill_between(
            grid, values.mean(0) - values.std(0), values.mean(0) + values.std(0), color=color, alpha=0.2
        )
    for i, (seed, curves) in enumerate(per_seed.items()):
        for source, style, color, name in (
            ("train", "o-", "tab:red", "training episodes"),
            ("eval", "s--", "tab:purple", "evaluation"),
        ):
            rows = curves[source]
            if rows:
                steps, scores = [r["step"] for r in rows], [r["score"] for r in rows]
                ax.plot(steps, scores, style, color=color, alpha=1.0 - 0.35 * i, markersize=4,
                        label=f"dreamer_tf seed {seed}, {name}")  # fmt: skip
    ax.set(
        xlabel="env steps (published: as published)",
        ylabel="episode return",
        title=args.task,
        xlim=(0, limit),
    )
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def restore(args: argparse.Namespace, seed: int) -> int:
    """Unpack ``<carry>/seed<N>.tar.gz`` into the seed's folder if that has no checkpoint; 1 on a bad pack."""
    if not args.carry:
        return 0
    pack, logdir = Path(args.carry).expanduser() / f"seed{seed}.tar.gz", run_dir(args, seed)
    if not pack.exists() or (logdir / "checkpoint").exists():
        return 0
    try:
        info = carry_run.unpack(pack, logdir)
    except carry_run.CarryError as error:
        print(f"[check] {error}", file=sys.stderr)
        return 1
    print(f"[check] unpacked {pack} (env step {info['step']}) into {logdir}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    start = time.time()
    chunks = 0
    if not args.report_only and any(restore(args, seed) for seed in args.seeds):
        return 1
    while not args.report_only:
        pending = []
        for seed in args.seeds:
            status = read_status(run_dir(args, seed))
            # (a run done at fewer steps goes on: --steps was raised)
            if not (status.get("status") == "done" and status.get("step", 0) >= int(args.steps)):
                pending.append(seed)
        left = args.max_minutes * 60 - (time.time() - start) if args.max_minutes else float("inf")
        if not pending or left <= 30:
            break
        codes = run_chunk(args, extra, pending, min(args.chunk_minutes * 60, left))
        chunks += 1
        summary = write_report(args, time.time() - start)
        steps = {seed: read_status(run_dir(args, seed)).get("step") for seed in pending}
        print(f"[check] chunk {chunks}: exit codes {codes}, env steps {steps}", file=sys.stderr)
        failed = [
            seed for seed, code in codes.items()
            if code not in (0, 128 + signal.SIGTERM) or read_status(run_dir(args, seed)).get("status") == "failed"
        ]  # fmt: skip
        if args.carry:
            for seed in pending:
                if seed in failed:
                    continue
                pack = Path(args.carry).expanduser() / f"seed{seed}.tar.gz"
                try:
                    info = carry_run.pack(run_dir(args, seed), pack)
                except carry_run.CarryError as error:
                    print(f"[check] {error}", file=sys.stderr)
                    return 1
                print(f"[check] packed seed {seed}, env step {info['step']}, into {pack}", file=sys.stderr)
        if failed:
            where = ", ".join(str(run_dir(args, seed) / "status.json") for seed in failed)
            print(f"[check] training failed (exit codes {codes}); see {where}", file=sys.stderr)
            return 1
    summary = write_report(args, time.time() - start)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
