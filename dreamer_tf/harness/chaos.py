"""Kill a training run with SIGKILL again and again, resume it each time, and check what survived.

    python benchmarks/chaos.py --kills 100 --logdir /tmp/chaos
    python benchmarks/chaos.py --kills 3 --task dummy_disc --configs debug   # a quick look

Trains DreamerV3 with the ``debug`` preset (by default on bsuite catch, whose environment also writes
bsuite's CSV) through the command line, with a checkpoint every ``--save-every`` seconds. Each round
starts the run, waits until it trains, and kills it with SIGKILL: every other round as soon as a
checkpoint write is under way (its ``tmp-*`` folder appears), the others at a random moment. After
every kill the next round resumes the run. At the end a SIGTERM lets the run save and stop, and then:

- ``corrupt``: kills after which the checkpoint did not load (``Checkpoint.load``) or was gone after
  one had been saved, plus rounds that started afresh although a checkpoint had been saved;
- ``duplicates``: rows of ``scores.jsonl`` and ``metrics.jsonl`` that repeat or go back in env steps,
  bsuite CSV rows that disagree with ``scores.jsonl`` and TensorBoard scalar steps that
  ``metrics.jsonl`` does not have (rows of a timeline a kill discarded);
- ``lost_env_steps_max``: the most env steps a kill cost (the last step recorded before the kill
  minus the step the next round resumed from);
- ``backwards``: resumes from an env step below the previous resume's.

Prints one JSON line with ``kills``, ``resumed``, ``corrupt``, ``duplicates``, ``lost_env_steps_max``,
``backwards`` and ``seconds``. Exit status 0 when ``corrupt``, ``duplicates`` and ``backwards`` are 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dreamer_tf.run.checkpoint import Checkpoint, CheckpointError
from dreamer_tf.run.metrics import read_events, read_jsonl

RESUMED = re.compile(r"Resumed from \S+ at env step (\d+)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs, each followed by a resume")
    parser.add_argument("--logdir", help="the run folder (default: a new temporary folder)")
    parser.add_argument("--task", default="bsuite_catch/0")
    parser.add_argument("--configs", nargs="+", default=["bsuite", "debug"])
    parser.add_argument("--save-every", type=float, default=2.0, help="seconds between checkpoints")
    parser.add_argument("--max-wait", type=float, default=8.0, help="longest random wait before a kill (s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times, not the run")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a round may take to train")
    parser.add_argument("--verbose", action="store_true", help="one line per round on stderr")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    return args


def command(args: argparse.Namespace, logdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "dreamer_tf", "--task", args.task, "--configs", *args.configs,
        "--logdir", str(logdir), "--run.steps", "1e9", "--run.save_every", str(args.save_every),
        "--run.log_every", "1", "--run.progress", "false", "--run.envs", "1", "--run.parallel", "none",
    ]  # fmt: skip


def last_step(logdir: Path) -> int:
    """The highest env step the run has recorded so far (metrics, scores, status)."""
    steps = [
        row.get("step", 0) for name in ("metrics.jsonl", "scores.jsonl") for row in read_jsonl(logdir / name)
    ]
    try:
        steps.append(json.loads((logdir / "status.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        pass
    return max(steps, default=0)


def writing_checkpoint(logdir: Path) -> bool:
    folder = logdir / "checkpoint"
    return folder.exists() and any(p.name.startswith("tmp-") for p in folder.iterdir())


def trained(logdir: Path, start_size: int) -> bool:
    """Whether the round has logged a training update (metrics.jsonl grew by a row with a loss)."""
    path = logdir / "metrics.jsonl"
    if not path.exists() or path.stat().st_size <= start_size:
        return False
    with open(path, "rb") as file:
        file.seek(start_size)
        return b'"train/loss/' in file.read()


def run_round(args, logdir: Path, rng: random.Random, mode: str, log) -> dict[str, Any]:
    """Start (or resume) the run, wait until it trains, then stop it: ``kill``, ``in_write`` or ``term``."""
    metrics = logdir / "metrics.jsonl"
    start_size = metrics.stat().st_size if metrics.exists() else 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    stderr_path = logdir.parent / f"{logdir.name}.round.log"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command(args, logdir), stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        deadline = time.monotonic() + args.timeout
        while not trained(logdir, start_size):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the run exited with {process.returncode}: {stderr_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the run did not train within {args.timeout:.0f} s")
            time.sleep(0.05)
        if mode == "in_write":
            until = time.monotonic() + 4 * args.save_every + 5
            while not writing_checkpoint(logdir) and time.monotonic() < until:
                time.sleep(0.002)
        elif mode == "kill":
            time.sleep(rng.uniform(0, args.max_wait))
        before = last_step(logdir)
        in_write = writing_checkpoint(logdir)
        process.send_signal(signal.SIGTERM if mode == "term" else signal.SIGKILL)
        code = process.wait(timeout=120)
        after = last_step(logdir) if mode == "term" else before
    text = stderr_path.read_text()
    stderr_path.unlink()
    match = RESUMED.search(text)
    result = {"mode": mode, "in_write": in_write, "exit": code, "last_step": max(before, after),
              "resumed_at": int(match.group(1)) if match else None, "fresh": "Found a checkpoint" not in text}  # fmt: skip
    log(json.dumps(result))
    return result


def checkpoint_state(logdir: Path) -> str:
    """``ok`` when the run's checkpoint loads, ``none`` when there is no complete one, else ``corrupt``."""
    try:
        return "ok" if Checkpoint(logdir / "checkpoint").load(fallback=True) is not None else "none"
    except CheckpointError:
        return "corrupt"


def record_faults(logdir: Path) -> dict[str, int]:
    """Rows that repeat or go back in env steps, per file, and disagreements of bsuite's CSV and
    TensorBoard with the JSONL records."""
    faults = {}
    scores = read_jsonl(logdir / "scores.jsonl")
    faults["scores.jsonl"] = sum(b["step"] <= a["step"] for a, b in zip(scores, scores[1:]))
    metrics = read_jsonl(logdir / "metrics.jsonl")
    faults["metrics.jsonl"] = sum(b["step"] < a["step"] for a, b in zip(metrics, metrics[1:]))
    faults["metrics.jsonl"] += len(metrics) - len({json.dumps(row, sort_keys=True) for row in metrics})
    faults["bsuite csv"] = bsuite_faults(logdir, scores)
    faults["tensorboard"] = tensorboard_faults(logdir, metrics)
    return faults


def bsuite_faults(logdir: Path, scores: list[dict]) -> int:
    """bsuite CSV rows that disagree with ``scores.jsonl``: an episode it does not have, or another
    return, cumulative return or length (the CSV counts the steps that act, without the reset step)."""
    folder = logdir / "bsuite"
    faults = 0
    for path in sorted(folder.glob("*.csv")) if folder.exists() else []:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
        for row in rows:
            episode = int(float(row["episode"]))
            if not 1 <= episode <= len(scores):
                faults += 1
                continue
            record, done = scores[episode - 1], scores[:episode]
            faults += not (
                abs(float(row["episode_return"]) - record["episode/score"]) < 1e-6
                and abs(float(row["total_return"]) - sum(r["episode/score"] for r in done)) < 1e-6
                and int(float(row["episode_len"])) == record["episode/length"] - 1
                and int(float(row["steps"])) == sum(r["episode/length"] - 1 for r in done)
            )
    return faults


def tensorboard_faults(logdir: Path, metrics: list[dict]) -> int:
    """TensorBoard scalar points at (tag, step) pairs that no ``metrics.jsonl`` row has."""
    known = {(key, row["step"]) for row in metrics for key in row if key != "step"}
    return sum((tag, step) not in known for path in sorted(logdir.glob("events.out.tfevents.*"))
               for step, tag, _ in read_events(path))  # fmt: skip


def chaos(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    log = (lambda line: print(f"[chaos] {line}", file=sys.stderr)) if args.verbose else (lambda line: None)
    workdir = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    logdir = workdir / "run"
    logdir.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rounds, corrupt, lost, backwards, saved_once = [], 0, 0, 0, False
    for kill in range(args.kills + 1):
        mode = "term" if kill == args.kills else ("in_write" if kill % 2 else "kill")
        result = run_round(args, logdir, rng, mode, log)
        if result["resumed_at"] is None:
            corrupt += saved_once  # a loadable checkpoint was there, and the run started afresh
        elif rounds:
            lost = max(lost, rounds[-1]["last_step"] - result["resumed_at"])
            previous = max((r["resumed_at"] for r in rounds if r["resumed_at"] is not None), default=0)
            backwards += result["resumed_at"] < previous
        result["checkpoint"] = checkpoint_state(logdir)
        # Corrupt: unreadable, or gone after one had been saved (a kill in the first save leaves none).
        corrupt += result["checkpoint"] == "corrupt" or (saved_once and result["checkpoint"] == "none")
        saved_once = saved_once or result["checkpoint"] == "ok"
        rounds.append(result)
    faults = record_faults(logdir)
    return {
        "kills": args.kills,
        "in_write": sum(r["in_write"] for r in rounds if r["mode"] != "term"),
        "resumed": sum(r["resumed_at"] is not None for r in rounds),
        "corrupt": corrupt,
        "duplicates": sum(faults.values()),
        "duplicates_by_file": faults,
        "lost_env_steps_max": lost,
        "backwards": backwards,
        "final_step": rounds[-1]["last_step"],
        "seconds": round(time.monotonic() - start, 1),
        "logdir": str(logdir),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = chaos(args)
    except RuntimeError as error:
        print(f"chaos.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["corrupt"] == result["duplicates"] == result["backwards"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
