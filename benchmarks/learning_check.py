"""Does DreamerV3 learn like the paper says? Train dmc_cartpole_balance and compare with the published curves.

    python benchmarks/learning_check.py --logdir ~/logdir/check_cartpole            # 100K env steps
    python benchmarks/learning_check.py --logdir DIR --chunk-minutes 10 --max-minutes 60
    python benchmarks/learning_check.py --logdir DIR --report-only                  # curve and table only
    python benchmarks/learning_check.py --logdir DIR --max-minutes 150 --carry check.tar.gz   # across machines

The run uses the ``dmc_proprio`` preset unchanged (size1m, train ratio 1024: one update per env
step). It goes in chunks: each chunk is one ``python -m dreamer_tf.train`` process that is stopped
with SIGTERM after ``--chunk-minutes`` (it writes a final checkpoint) and the next chunk resumes it,
so the check can be spread over several sessions or machines, and an interrupted check loses at
most one chunk. On JAX the chunks share a compilation cache (``$JAX_COMPILATION_CACHE_DIR``, by
default ``~/.cache/dreamer_tf/jax``), so only the first one compiles. Any ``--a.b value`` flags
after the known ones go to the training command (e.g. ``--run.envs 4``); they must be the same in
every chunk, as the CLI refuses model changes on resume.

Training episodes are what the published curves show, but they finish only in rounds: with the
preset's 16 envs and cartpole's 1001-step episodes, every 16,016 env steps. A resumed chunk starts
its environments' episodes afresh, so a chunk shorter than one round (about 4.2 hours at the 1.05
env steps/s of a 2-core CPU) never finishes a training episode. Each chunk therefore also evaluates
the policy every ``--eval-every`` env steps (and when a run that was never evaluated resumes):
``--eval-eps`` episodes on separate environments, actions sampled as in training, no training
meanwhile (``run.eval_every``, ``run.eval_eps`` and ``run.eval_envs`` of the training command).

With ``--carry FILE`` the run also survives a change of machine: a ``--logdir`` without a checkpoint
is first restored from FILE (a ``benchmarks/carry_run.py`` pack) if it exists, and FILE is rewritten
after every chunk, so committing or copying FILE is enough to go on elsewhere.

After every chunk it writes, into ``--out`` (default ``<logdir>/check``):
``curve.csv`` (our training-episode score per 10K-step bin, ``source`` ``train``, and each
evaluation's mean score, ``source`` ``eval``), ``summary.json`` (our score at the furthest bin and at
the furthest evaluation, each next to the published DreamerV3 and PPO means and spreads at that
step) and ``curve.png`` (all of them on the same axes). Published curves are read from
``$DREAMER_REFERENCE_SCORES`` (the official ``scores/dmc_proprio-dreamerv3.json.gz`` and
``dmc_proprio-ppo_fixhp.json.gz``); without them the report says so and shows our curves alone.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import carry_run  # noqa: E402  (beside this file)

from dreamer_tf.metrics import read_jsonl  # noqa: E402

TASK = "dmc_cartpole_balance"
PUBLISHED = {"DreamerV3 (published)": "dmc_proprio-dreamerv3", "PPO (published)": "dmc_proprio-ppo_fixhp"}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", required=True, help="run folder; an existing one is resumed")
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--configs", nargs="+", default=["dmc_proprio"])
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
        help="a carry_run.py pack: unpacked into --logdir when it has no checkpoint yet, rewritten after every chunk",
    )
    return parser.parse_known_args(argv)


def read_status(logdir: Path) -> dict:
    path = logdir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_chunk(args: argparse.Namespace, extra: list[str], seconds: float) -> int:
    """One training process, stopped with SIGTERM (final checkpoint) after ``seconds``."""
    command = [sys.executable, "-m", "dreamer_tf.train", "--task", args.task, "--configs", *args.configs]
    command += ["--logdir", str(Path(args.logdir).expanduser()), "--run.steps", str(int(args.steps))]
    command += ["--run.progress", "false"]
    if args.eval_every > 0:
        command += ["--run.eval_every", str(int(args.eval_every)), "--run.eval_eps", str(args.eval_eps)]
        command += ["--run.eval_envs", str(args.eval_envs)]
    command += extra  # last, so that a --run.* flag given here wins
    # On JAX every chunk compiles the train and policy steps again (minutes for size1m on a CPU);
    # JAX's persistent compilation cache lets the later chunks load them instead.
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("~/.cache/dreamer_tf/jax").expanduser()))
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise


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


def published_curves(task: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """``{label: [(xs, ys) per seed]}`` from ``$DREAMER_REFERENCE_SCORES``; empty when absent."""
    folder = os.environ.get("DREAMER_REFERENCE_SCORES", "")
    curves = {}
    for label, name in PUBLISHED.items():
        path = Path(folder) / f"{name}.json.gz"
        if not folder or not path.exists():
            continue
        with gzip.open(path, "rt") as file:
            records = json.load(file)
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


def write_report(args: argparse.Namespace, elapsed: float) -> dict:
    logdir = Path(args.logdir).expanduser()
    out = Path(args.out).expanduser() if args.out else logdir / "check"
    out.mkdir(parents=True, exist_ok=True)
    curve, evals = our_curve(logdir, args.bin), eval_curve(logdir)
    published = published_curves(args.task)
    with open(out / "curve.csv", "w") as file:
        file.write("step,score,episodes,source\n")
        for source, rows in (("train", curve), ("eval", evals)):
            file.writelines(f"{r['step']},{r['score']:.2f},{r['episodes']},{source}\n" for r in rows)
    summary: dict = {
        "task": args.task,
        "configs": args.configs,
        "status": read_status(logdir).get("status", "not started"),
        "check_minutes_this_call": round(elapsed / 60, 1),
        "published": "found" if published else "absent: set DREAMER_REFERENCE_SCORES to the official scores/",
    }
    if curve:
        summary.update(point(curve[-1], published))
    if evals:
        summary["eval"] = point(evals[-1], published)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(curve, evals, published, args, out / "curve.png")
    return summary


def point(row: dict, published: dict) -> dict:
    """One of our points next to each published curve's mean and spread over seeds at its step."""
    result = {"step": row["step"], "score": round(row["score"], 1), "episodes": row["episodes"]}
    for label, runs in published.items():
        mean, std = at_step(runs, row["step"])
        result[label] = {"mean": round(mean, 1), "std": round(std, 1), "seeds": len(runs)}
    return result


def plot(curve: list[dict], evals: list[dict], published: dict, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    limit = max([args.steps, *(rows[-1]["step"] for rows in (curve, evals) if rows)])
    for (label, runs), color in zip(published.items(), ("tab:blue", "tab:green")):
        start = max(xs[0] for xs, _ in runs)  # no extrapolation before the first published point
        grid = np.linspace(start, limit, 100)
        values = np.array([np.interp(grid, xs, ys) for xs, ys in runs])
        ax.plot(grid, values.mean(0), color=color, label=f"{label}, {len(runs)} seeds")
        ax.fill_between(
            grid, values.mean(0) - values.std(0), values.mean(0) + values.std(0), color=color, alpha=0.2
        )
    ours = []  # (rows, line style, colour, label) of each of our series that has points
    if curve:
        ours.append((curve, "o-", "tab:red", "training episodes"))
    if evals:
        ours.append((evals, "s--", "tab:purple", f"evaluation ({evals[-1]['episodes']} episodes)"))
    for rows, style, color, label in ours:
        steps, scores = [r["step"] for r in rows], [r["score"] for r in rows]
        ax.plot(steps, scores, style, color=color, label=f"dreamer_tf, {label}")
    ax.set(xlabel="env steps", ylabel="episode return", title=args.task, xlim=(0, limit))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    logdir = Path(args.logdir).expanduser()
    start = time.time()
    chunks = 0
    carry = Path(args.carry).expanduser() if args.carry else None
    if carry and not args.report_only and carry.exists() and not (logdir / "checkpoint").exists():
        try:
            info = carry_run.unpack(carry, logdir)
        except carry_run.CarryError as error:
            print(f"[check] {error}", file=sys.stderr)
            return 1
        print(f"[check] unpacked {carry} (env step {info['step']}) into {logdir}", file=sys.stderr)
    while not args.report_only:
        status = read_status(logdir)
        if status.get("status") == "done" and status.get("step", 0) >= int(args.steps):
            break  # (a run done at fewer steps goes on: --steps was raised)
        left = args.max_minutes * 60 - (time.time() - start) if args.max_minutes else float("inf")
        if left <= 30:
            break
        code = run_chunk(args, extra, min(args.chunk_minutes * 60, left))
        chunks += 1
        status = read_status(logdir)
        summary = write_report(args, time.time() - start)
        print(f"[check] chunk {chunks}: exit {code}, {json.dumps(summary)}", file=sys.stderr)
        if code not in (0, 128 + signal.SIGTERM) or status.get("status") == "failed":
            print(f"[check] training failed (exit {code}); see {logdir / 'status.json'}", file=sys.stderr)
            return 1
        if carry:
            try:
                info = carry_run.pack(logdir, carry)
            except carry_run.CarryError as error:
                print(f"[check] {error}", file=sys.stderr)
                return 1
            print(f"[check] packed env step {info['step']} into {carry}", file=sys.stderr)
    summary = write_report(args, time.time() - start)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
