"""Evaluate a run's checkpoint without touching its training state: ``python -m dreamer_tf.eval``.

    python -m dreamer_tf.eval --logdir ~/logdir/walker --episodes 10 --envs 2 --mode greedy --video
    dreamer-tf-eval --logdir RUN --checkpoint RUN/checkpoint/latest --seed 3

The run's own ``config.yaml`` builds the environments and the agent, and its latest checkpoint (or
the one given) is read, never written: nothing in ``checkpoint/`` changes and the run's lock is not
taken, so a training process may keep running in the same folder (a save that swaps the checkpoint
while it is read is retried). The episodes run on ``--envs`` environments with evaluation seeds
(``run.eval_envs``' seeds, from ``--seed``); each environment plays its share of the episodes, so
short episodes are not favoured. Appended to ``<run>/eval.jsonl``: one row per episode
(``kind: episode``) and a summary row (``kind: summary``), each with the checkpoint's env step, the
mode and the seed. ``--video`` writes the first episode's frames (an image observation, else
``log/image``) to ``<run>/media/eval_<mode>_<step>.gif``.

Modes: ``sample`` draws actions from the policy (as training's evaluation does; the paper
evaluates the stochastic policy), ``greedy`` takes the mode of each action distribution.

Exit codes: 0 done, 2 a problem the user can fix (missing run folder, no or corrupt checkpoint, a
bad flag: one line, nothing written), 130 when interrupted (nothing written).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.config import Config, ConfigError

EVAL_FILE = "eval.jsonl"
MODES = {"sample": "eval", "greedy": "greedy"}  # --mode -> the agent's policy mode
# A training process swaps ``latest`` during a save; a read that raced it is tried again.
READ_ATTEMPTS = 5


class EvalError(RuntimeError):
    """A problem the user can fix; the message is one line."""


def load_checkpoint(logdir: Path, checkpoint: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Read the run's latest checkpoint (or ``checkpoint``: a checkpoint folder with a manifest, or a
    ``checkpoint/`` folder) without writing anything; returns the folder read and its state."""
    from dreamer_tf.run.checkpoint import MANIFEST, Checkpoint, CheckpointError
    from dreamer_tf.run.lock import lock_holder

    path = Path(checkpoint).expanduser() if checkpoint else logdir / "checkpoint"
    if not path.is_dir():
        if checkpoint:
            raise EvalError(f"Checkpoint folder {path} does not exist.")
        raise EvalError(f"{logdir} holds no checkpoint (it has no checkpoint/ folder).")
    single = (path / MANIFEST).is_file()
    store = Checkpoint(path.parent if single else path)
    for attempt in range(READ_ATTEMPTS):
        try:
            state = store.load_folder(path) if single else store.load()
            break
        except CheckpointError as error:
            # Only a live trainer in the folder can make a read fail for a moment.
            if attempt + 1 == READ_ATTEMPTS or lock_holder(logdir) is None:
                raise EvalError(str(error)) from None
            time.sleep(0.5)
    if state is None:
        raise EvalError(f"{logdir} holds no checkpoint ({path} has no complete checkpoint folder).")
    if "agent" not in state or "loop" not in state:
        raise EvalError(f"{store.loaded} is not a training checkpoint (it lacks 'agent' or 'loop').")
    return Path(store.loaded), state


def load_run_config(logdir: Path) -> Config:
    """The run's saved ``config.yaml``."""
    if not logdir.is_dir():
        raise EvalError(f"Run folder {logdir} does not exist.")
    path = logdir / "config.yaml"
    if not path.is_file():
        raise EvalError(f"{logdir} is not a run folder: it has no config.yaml.")
    return Config.load(path)


def video_key(obs_space: dict[str, Any]) -> str | None:
    """The observation to record: the first image (``image`` preferred), else ``log/image``."""
    images = [k for k, v in obs_space.items() if not k.startswith("log/") and v.is_image]
    if images:
        return "image" if "image" in images else images[0]
    return "log/image" if "log/image" in obs_space else None


def play(agent: Any, envs: Any, episodes: int, mode: str, record: str | None = None):
    """Run ``episodes`` episodes, environment ``i`` playing its share; returns the episode records
    (in the order they ended) and the frames of environment 0's first episode under ``record``."""
    from dreamer_tf.run.loop import _Episodes

    count = len(envs)
    quota = [episodes // count + (i < episodes % count) for i in range(count)]
    act_space = {k: v for k, v in envs.act_space.items() if k != "reset"}
    acts = {k: np.zeros((count,) + tuple(v.shape), v.dtype) for k, v in act_space.items()}
    acts["reset"] = np.ones(count, bool)
    state = agent.init_policy(count)
    tracker, finished = _Episodes(count), []
    frames: list[np.ndarray] = []
    recording = record is not None
    while sum(quota) > 0:
        obs = envs.step(acts)
        if recording:
            frames.append(np.asarray(obs[record][0]))
        agent_obs = {k: v for k, v in obs.items() if not k.startswith("log/")}
        acts, state, _ = agent.policy(agent_obs, state, mode=MODES[mode])
        acts = {k: np.asarray(v) for k, v in acts.items()}
        for index in range(count):
            result = tracker.add(index, obs)
            if index == 0 and obs["is_last"][0]:
                recording = False
            if result is not None and quota[index] > 0:
                quota[index] -= 1
                finished.append({"env": index, **result})
        acts = {**acts, "reset": obs["is_last"].copy()}
    return finished, frames


def evaluate(
    logdir: str | Path,
    checkpoint: str | Path | None = None,
    episodes: int = 10,
    envs: int = 1,
    mode: str = "sample",
    video: bool = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """Evaluate the checkpoint; append the rows to ``eval.jsonl`` and return the summary row.

    Raises ``EvalError`` (nothing written) for a missing run folder or checkpoint, a corrupt
    checkpoint or a bad argument.
    """
    from dreamer_tf.run.media import media_name, write_video
    from dreamer_tf.run.train import make_envs, resolve_agent, seed_everything

    if mode not in MODES:
        raise EvalError(f"Unknown --mode '{mode}'; choose one of: {', '.join(MODES)}.")
    if episodes < 1 or envs < 1:
        raise EvalError(f"--episodes and --envs must be at least 1, got {episodes} and {envs}.")
    logdir = Path(logdir).expanduser().absolute()
    config = load_run_config(logdir)
    folder, state = load_checkpoint(logdir, checkpoint)
    seed = int(config.seed) if seed is None else int(seed)
    config = config.update({"seed": seed, "run.eval_envs": envs})
    agent_class = resolve_agent(config.agent_name)
    seed_everything(seed)
    batch = make_envs(config, "eval")
    try:
        record = None
        if video:
            record = video_key(batch.obs_space)
            if record is None:
                raise EvalError(
                    f"--video needs an image observation or log/image; {config.task} has neither."
                )
        obs_space = {k: v for k, v in batch.obs_space.items() if not k.startswith("log/")}
        act_space = {k: v for k, v in batch.act_space.items() if k != "reset"}
        agent = agent_class(obs_space, act_space, config)
        try:
            agent.load(state["agent"])
        except (KeyError, ValueError) as error:
            raise EvalError(f"Checkpoint {folder} does not fit the run's agent: {error}") from None
        if hasattr(agent, "reseed"):
            agent.reseed(seed)  # the policy's noise follows --seed, not the checkpoint's generator
        start = time.perf_counter()
        finished, frames = play(agent, batch, episodes, mode, record)
    finally:
        batch.close()
    step = int(state["loop"]["env_steps"])
    common = {"env_step": step, "mode": mode, "seed": seed, "checkpoint": str(folder)}
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    scores = np.array([r["score"] for r in finished], np.float64)
    lengths = np.array([r["length"] for r in finished], np.float64)
    video_path = None
    if frames:
        video_path = write_video(
            logdir / "media" / media_name(f"eval_{mode}", step, ".gif"), np.stack(frames)
        )
    summary = {
        "kind": "summary",
        **common,
        "episodes": len(finished),
        "envs": envs,
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "score_min": float(scores.min()),
        "score_max": float(scores.max()),
        "length_mean": float(lengths.mean()),
        "seconds": round(time.perf_counter() - start, 3),
        "video": str(video_path) if video_path else None,
        "time": stamp,
    }
    rows = [{"kind": "episode", **common, "episode": i, **r, "time": stamp} for i, r in enumerate(finished)]
    text = "".join(json.dumps(row) + "\n" for row in rows + [summary])
    # One append of every row: another evaluation of the same run cannot interleave its lines.
    with open(logdir / EVAL_FILE, "a") as file:
        file.write(text)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dreamer-tf-eval",
        description="Evaluate a run's checkpoint (read-only) and append the episodes to <logdir>/eval.jsonl.",
        allow_abbrev=False,
    )
    parser.add_argument("--logdir", required=True, help="the run folder")
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play (default: 10)")
    parser.add_argument("--envs", type=int, default=1, help="environments stepped together (default: 1)")
    parser.add_argument(
        "--mode", choices=list(MODES), default="sample", help="sample the policy or take its mode"
    )
    parser.add_argument("--video", action="store_true", help="write the first episode to media/ as a GIF")
    parser.add_argument(
        "--seed", type=int, help="seed of the environments and the policy (default: the run's)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dreamer_tf.eval`` and the ``dreamer-tf-eval`` script."""
    from dreamer_tf.envs import UnknownTaskError
    from dreamer_tf.envs.wrappers import MissingPackageError
    from dreamer_tf.run.train import AgentUnavailableError

    args = parse_args(argv)
    try:
        summary = evaluate(
            args.logdir, args.checkpoint, args.episodes, args.envs, args.mode, args.video, args.seed
        )
    except (EvalError, ConfigError, UnknownTaskError, MissingPackageError, AgentUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted: nothing written.", file=sys.stderr)
        return 130
    line = (
        f"Evaluated env step {summary['env_step']} ({summary['mode']}, seed {summary['seed']}): "
        f"{summary['episodes']} episodes, score {summary['score_mean']:.4g} +- {summary['score_std']:.3g} "
        f"(min {summary['score_min']:.4g}, max {summary['score_max']:.4g}), "
        f"length {summary['length_mean']:.4g}. Wrote {Path(args.logdir).expanduser() / EVAL_FILE}"
    )
    if summary["video"]:
        line += f" and {summary['video']}"
    print(line + ".")
    return 0
