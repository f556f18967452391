"""benchmarks/learning_check.py: its report from hand-made run files and fake published curves, and
one real chunk (random agent, so nothing compiles) that must record training episodes and evaluations.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
from dreamer_tf.harness import learning_check

pytestmark = pytest.mark.backend_independent


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def fake_reference(tmp_path, monkeypatch):
    """Two DreamerV3 seeds and one PPO seed of the task, plus another task that must be ignored."""
    folder = tmp_path / "reference"
    folder.mkdir()
    curves = {
        "dmc_proprio-dreamerv3": [
            {"task": "dmc_cartpole_balance", "xs": [0, 10000, 20000], "ys": [0, 100, 200]},
            {"task": "dmc_cartpole_balance", "xs": [0, 10000, 20000], "ys": [0, 300, 400]},
            {"task": "dmc_walker_walk", "xs": [0, 20000], "ys": [0, 999]},
        ],
        "dmc_proprio-ppo_fixhp": [{"task": "dmc_cartpole_balance", "xs": [0, 20000], "ys": [50, 250]}],
    }
    for name, records in curves.items():
        with gzip.open(folder / f"{name}.json.gz", "wt") as file:
            json.dump(records, file)
    monkeypatch.setenv("DREAMER_REFERENCE_SCORES", str(folder))
    return folder


def test_report_of_training_episodes_and_evaluations(tmp_path, fake_reference):
    logdir = tmp_path / "check" / "seed0"
    logdir.mkdir(parents=True)
    write_jsonl(
        logdir / "scores.jsonl",
        [
            {"step": 5000, "episode/score": 10.0, "episode/length": 1001},
            {"step": 9000, "episode/score": 20.0, "episode/length": 1001},
            {"step": 16000, "episode/score": 40.0, "episode/length": 1001},
        ],
    )
    write_jsonl(
        logdir / "metrics.jsonl",
        [
            {
                "step": 0,
                "eval_episode/score": 1.0,
                "eval_episode/length": 1001.0,
                "eval_episode/episodes": 16,
            },
            {"step": 3000, "train/loss/rep": 1.0},
            {
                "step": 15000,
                "eval_episode/score": 60.0,
                "eval_episode/length": 1001.0,
                "eval_episode/episodes": 16,
            },
        ],
    )
    with open(logdir / "metrics.jsonl", "a") as file:
        file.write('{"step": 16500, "eval_episode/score": 7')  # torn by a run that is writing: skipped
    (logdir / "status.json").write_text(json.dumps({"status": "interrupted", "step": 16500}))
    (logdir / "config.yaml").write_text("batch_size: 16\nbatch_length: 64\nrun: {train_ratio: 1024}\n")
    args, extra = learning_check.parse_args(["--logdir", str(tmp_path / "check"), "--report-only"])
    assert extra == []
    summary = learning_check.write_report(args, elapsed=0.0)

    out = tmp_path / "check" / "check"
    assert (out / "curve.csv").read_text().splitlines() == [
        "seed,step,score,episodes,source",
        "0,9000,15.00,2,train",  # bin (0, 10K]: mean of 10 and 20, labelled with its last episode's step
        "0,16000,40.00,1,train",  # the partial bin (10K, 20K]
        "0,0,1.00,16,eval",
        "0,15000,60.00,16,eval",
    ]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["published"] == "found"
    assert summary["updates_per_step"] == 1.0
    seed = summary["seeds"]["0"]
    assert seed["status"] == "interrupted"
    # Training episodes at 16K: DreamerV3 seeds interpolate to 160 and 360 (mean 260, std 100); the
    # walker curve of the other task is not among them. PPO: 50 + 200 * 0.8 = 210. The published DMC
    # curves count two frames per agent step and 0.25 updates per frame: at equal agent steps they are
    # read at 32K (200 and 400: mean 300), at equal updates at 64K (past the end: 200 and 400).
    assert (seed["train"]["step"], seed["train"]["score"], seed["train"]["episodes"]) == (16000, 40.0, 1)
    assert seed["train"]["DreamerV3 (published)"] == {
        "same_x": {"x": 16000, "mean": 260.0, "std": 100.0},
        "same_agent_steps": {"x": 32000, "mean": 300.0, "std": 100.0},
        "same_updates": {"x": 64000, "mean": 300.0, "std": 100.0},
        "seeds": 2,
    }
    assert seed["train"]["PPO (published)"] == {"same_x": {"x": 16000, "mean": 210.0, "std": 0.0}, "seeds": 1}
    # The furthest evaluation, at 15K: DreamerV3 150 and 350, PPO 50 + 200 * 0.75 = 200.
    assert seed["eval"]["step"] == 15000 and seed["eval"]["score"] == 60.0
    assert seed["eval"]["DreamerV3 (published)"]["same_x"] == {"x": 15000, "mean": 250.0, "std": 100.0}
    assert seed["eval"]["PPO (published)"]["same_x"] == {"x": 15000, "mean": 200.0, "std": 0.0}
    # The table: one row per 10K env steps with the seeds' evaluations and training episodes.
    table = summary["table"]
    assert [row["step"] for row in table] == [0, 10000, 20000]
    assert table[0]["eval"] == {"mean": 1.0, "std": 0.0, "seeds": 1} and "train" not in table[0]
    assert "eval" not in table[1] and table[1]["train"] == {
        "mean": 15.0,
        "std": 0.0,
        "seeds": 1,
    }  # per seed: its bin mean
    assert table[2]["eval"]["mean"] == 60.0 and table[2]["train"]["mean"] == 40.0
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_with_evaluations_only_and_no_published_curves(tmp_path, monkeypatch):
    # A CPU check whose chunks are shorter than a round of training episodes has evaluations only.
    monkeypatch.delenv("DREAMER_REFERENCE_SCORES", raising=False)
    logdir = tmp_path / "run" / "seed0"
    logdir.mkdir(parents=True)
    write_jsonl(
        logdir / "metrics.jsonl",
        [
            {
                "step": 16688,
                "eval_episode/score": 291.2,
                "eval_episode/length": 1001.0,
                "eval_episode/episodes": 16,
            }
        ],
    )
    args = argparse.Namespace(
        logdir=str(tmp_path / "run"), out=str(tmp_path / "out"), bin=1e4, task="dmc_cartpole_balance",
        configs=["dmc_proprio"], steps=1e5, seeds=[0],
    )  # fmt: skip
    summary = learning_check.write_report(args, elapsed=0.0)
    seed = summary["seeds"]["0"]
    assert "train" not in seed and seed["eval"] == {"step": 16688, "score": 291.2, "episodes": 16}
    assert summary["published"].startswith("absent: set DREAMER_REFERENCE_SCORES")
    assert seed["status"] == "not started" and summary["updates_per_step"] is None
    assert (tmp_path / "out" / "curve.csv").read_text().splitlines()[1:] == ["0,16688,291.20,16,eval"]
    assert (tmp_path / "out" / "curve.png").exists()


def test_a_chunk_trains_and_evaluates(tmp_path):
    """One real chunk of two seeds side by side (random agent on dummy_disc: 100-step episodes)."""
    logdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DREAMER_REFERENCE_SCORES", None)
    command = [
        sys.executable, str(ROOT / "benchmarks" / "learning_check.py"), "--logdir", str(logdir),
        "--task", "dummy_disc", "--configs", "debug", "--steps", "300", "--chunk-minutes", "3",
        "--eval-every", "100", "--eval-eps", "3", "--eval-envs", "2", "--seeds", "0", "1",
        "--agent", "random", "--run.envs", "1",  # extra flags go to the training command
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    for seed in ("0", "1"):
        assert summary["seeds"][seed]["status"] == "done"
        evals = learning_check.eval_curve(logdir / f"seed{seed}")
        # An evaluation at the start (the run was never evaluated) and then every 100 env steps.
        assert [row["step"] for row in evals] == [0, 100, 200, 300]
        assert all(row["episodes"] == 3 for row in evals)
        assert summary["seeds"][seed]["eval"]["step"] == 300
        # Training episodes of one env: 100 steps each plus the reset step.
        lines = (logdir / f"seed{seed}" / "scores.jsonl").read_text().splitlines()
        train = [json.loads(line) for line in lines]
        assert [record["episode/length"] for record in train] == [101, 101]
        assert summary["seeds"][seed]["train"]["step"] == train[-1]["step"]
        config = (logdir / f"seed{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}" in config  # each run has its own seed
    csv = (logdir / "check" / "curve.csv").read_text().splitlines()
    assert csv[0] == "seed,step,score,episodes,source"
    assert sum(line.endswith(",eval") for line in csv) == 8


def test_carry_moves_the_check_to_a_new_run_folder(tmp_path):
    """``--carry``: the first logdir's chunk leaves a pack; a second, empty logdir resumes from it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DREAMER_REFERENCE_SCORES", None)
    packs = tmp_path / "packs"

    def check(logdir: Path, steps: int) -> subprocess.CompletedProcess:
        command = [
            sys.executable, str(ROOT / "benchmarks" / "learning_check.py"), "--logdir", str(logdir),
            "--task", "dummy_disc", "--configs", "debug", "--steps", str(steps), "--chunk-minutes", "3",
            "--eval-every", "100", "--eval-eps", "2", "--eval-envs", "1", "--carry", str(packs),
            "--agent", "random", "--run.envs", "1",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    first = check(tmp_path / "first", 200)
    assert "packed seed 0, env step 200" in first.stderr and (packs / "seed0.tar.gz").exists()
    second = check(tmp_path / "second", 300)
    assert "unpacked" in second.stderr and "packed seed 0, env step 300" in second.stderr
    assert "Resumed from" in second.stderr
    run = tmp_path / "second" / "seed0"
    # The second folder continues the first's records: its evaluations at 0-200 came in the pack.
    assert [row["step"] for row in learning_check.eval_curve(run)] == [0, 100, 200, 300]
    train = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
    # The episode ending at 101 came in the pack; the one under way at 200 went on in the second
    # process (the pack holds the environment's state) and ended at 202, as without the move.
    assert [record["step"] for record in train] == [101, 202]
    assert json.loads((run / "status.json").read_text())["step"] == 300


def test_one_thread_keeps_the_xla_flags_already_set_and_those_added_after_it(monkeypatch):
    # XLA reads its flags up to the first word without "--": one in ours would hide every flag a
    # caller adds after it, as the device count below.
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    env = learning_check.thread_env(1)
    assert env["XLA_FLAGS"].split()[0] == "--xla_cpu_enable_fast_math=false"
    env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    code = "import jax; print(jax.device_count())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "2"
