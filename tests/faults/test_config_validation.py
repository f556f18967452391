"""Mistakes in the user's input: one line naming what is wrong, exit code 2, no traceback, and no
run folder made for a run that cannot start. Also the harness's input files (suites.yaml, the
published reference scores)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.config import CONSTRAINTS, ConfigError, _match_keys, load_config, read_presets, validate
from dreamer_tf.harness import make_report, run_suite
from dreamer_tf.run import train

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp_path: Path, *flags: str, logdir: Path | None = None) -> list[str]:
    logdir = tmp_path / "run" if logdir is None else logdir
    return ["--agent", "random", "--configs", "debug", "--run.steps", "20", "--run.progress", "false",
            "--logdir", str(logdir), *flags]  # fmt: skip


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--agent.opt.lr", "-1"], ["'agent.opt.lr'", "-1", "> 0"]),
        (["--run.train_ratio", "-8"], ["'run.train_ratio'", "-8", "> 0"]),
        (["--run.steps", "-5"], ["'run.steps'", "-5", "> 0"]),
        (["--run.envs", "0"], ["'run.envs'", "0", ">= 1"]),
        (["--batch_size", "0"], ["'batch_size'", "0", ">= 1"]),
        (["--batch_length", "0"], ["'batch_length'", "0", ">= 1"]),
        (["--run.episode_timeout", "0"], ["'run.episode_timeout'", "0", "> 0"]),
        (["--run.parallel", "threads"], ["'run.parallel'", "threads", "one of auto, none, process"]),
        (["--ppo.lr", ".nan"], ["'ppo.lr'", "nan", "> 0"]),
        (["--env.gym.render_mode", "human"], ["'env.gym.render_mode'", "human", "rgb_array"]),
    ],
)
def test_a_value_out_of_range_is_one_line_and_exit_2(tmp_path, capsys, flags, named):
    # Before: accepted (a diverging or never-training run, exit 0) or a ZeroDivisionError traceback.
    assert train.main(cli(tmp_path, *flags)) == 2
    line = one_error_line(capsys)
    assert all(text in line for text in named), line
    assert not (tmp_path / "run").exists()


UNKNOWN_TASKS = [
    "dummy_nope", "gym_NoSuchEnv-v0", "bsuite_catch/99", "dmc_walker_nope", "atari_pongg", "atari100k_breakot",
    "dmlab_rooms_watermazee", "crafter_foo", "minecraft_iron", "procgen_coinrunn", "memory_maze_10x10",
]  # fmt: skip


@pytest.mark.parametrize("task", UNKNOWN_TASKS)
def test_an_unknown_task_of_a_known_domain_fails_before_workers_and_run_folder(tmp_path, task):
    # Before: 16 workers spawned, a 60-line worker traceback, exit 1 and a run folder left behind.
    command = [sys.executable, "-m", "dreamer_tf", "--task", task, *cli(tmp_path, "--run.envs", "2")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"Unknown task '{task}'" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_every_listed_task_passes_the_up_front_check():
    # The check must never refuse a task the catalog offers (DMLab and MineRL are not installed
    # here: their names are checked against static lists).
    from dreamer_tf.envs import catalog, check_task

    names = [task for domain in catalog.BENCHMARKS for task in catalog.tasks(domain)]
    assert len(names) > 200
    for task in names:
        check_task(task)


def test_an_atari_game_is_checked_against_ale_rom_path(tmp_path, monkeypatch):
    from dreamer_tf.envs import UnknownTaskError, check_task

    (tmp_path / "pong.bin").write_bytes(b"")
    monkeypatch.setenv("ALE_ROM_PATH", str(tmp_path))
    check_task("atari_pong")
    with pytest.raises(UnknownTaskError, match="has no breakout.bin"):
        check_task("atari_breakout")


def test_a_logdir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert train.main(cli(tmp_path, logdir=tmp_path / "afile")) == 2
    assert "afile is a file" in one_error_line(capsys)
    assert train.main(cli(tmp_path, logdir=tmp_path / "afile" / "run")) == 2
    assert "inside" in one_error_line(capsys)


def test_a_logdir_that_cannot_be_written_is_refused(tmp_path, capsys):
    # Paths no user can write, root included (chmod does not stop root): sysfs refuses a new folder;
    # /proc/self exists but takes no new file.
    assert train.main(cli(tmp_path, logdir=Path("/sys/kernel/dreamer-tf-test-run"))) == 2
    assert "Cannot create the run folder /sys/kernel/dreamer-tf-test-run" in one_error_line(capsys)
    assert train.main(cli(tmp_path, logdir=Path("/proc/self"))) == 2
    assert "Cannot write in the run folder /proc/self" in one_error_line(capsys)


@pytest.mark.parametrize("garbage", ["foo: [1, 2\n", "- just\n- a list\n", "\x00\xff"])
def test_a_garbage_config_yaml_on_resume_is_named(tmp_path, capsys, garbage):
    assert train.main(cli(tmp_path)) == 0
    capsys.readouterr()
    (tmp_path / "run" / "config.yaml").write_bytes(garbage.encode("latin-1"))
    # Before: a yaml ScannerError / TypeError / UnicodeDecodeError traceback.
    assert train.main(cli(tmp_path)) == 2
    line = one_error_line(capsys)
    assert str(tmp_path / "run" / "config.yaml") in line and "not a readable config" in line


def test_every_preset_passes_and_every_constraint_names_keys():
    for name in read_presets():
        validate(load_config([] if name == "defaults" else [name]))
    flat = load_config().flat()
    assert not [key for key in CONSTRAINTS if not _match_keys(key, flat)], "a constraint matches no key"
    with pytest.raises(ConfigError, match=r"'agent.dec.units' is 0, but it must be >= 1"):
        validate(load_config([], ["--agent.dec.units", "0"]))


@pytest.mark.parametrize("text", ["", "domains: [\n", "- a\n- b\n", "agents: 1\nbudgets: {}\ndomains: {}\n"])
def test_a_malformed_or_empty_suite_file_is_named(tmp_path, capsys, text):
    path = tmp_path / "suites.yaml"
    path.write_text(text)
    # Before: TypeError or a yaml traceback.
    assert run_suite.main(["--suite", str(path), "--domains", "dmc_proprio", "--dry-run"]) == 2
    assert str(path) in one_error_line(capsys)


# mtime=0: the same bytes, and test ids, in every process (pytest-xdist workers must collect alike).
@pytest.mark.parametrize(
    "content",
    [b"not gzip at all", gzip.compress(b"{ no json", mtime=0), gzip.compress(b'"x"', mtime=0)],
    ids=["not-gzip", "not-json", "not-a-list"],
)
def test_a_corrupt_reference_scores_file_is_named(tmp_path, capsys, content):
    runs = tmp_path / "runs" / "dmc_proprio" / "dmc_cartpole_balance" / "dreamerv3" / "seed0"
    runs.mkdir(parents=True)
    spec = {"domain": "dmc_proprio", "task": "dmc_cartpole_balance", "agent": "dreamerv3", "seed": 0,
            "ablation": "", "budget": "short", "steps": 2000, "presets": [], "flags": {}}  # fmt: skip
    (runs / "run.json").write_text(json.dumps(spec))
    (runs / "status.json").write_text(json.dumps({"status": "done", "step": 2000, "error": None}))
    (runs / "config.yaml").write_text("task: dmc_cartpole_balance\nagent_name: dreamerv3\nseed: 0\n")
    rows = [{"step": s, "episode/score": 1.0, "episode/length": 10} for s in (1000, 2000)]
    (runs / "scores.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    reference = tmp_path / "scores"
    reference.mkdir()
    bad = reference / "dmc_proprio-dreamerv3.json.gz"
    bad.write_bytes(content)
    argv = [
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "report"),
        "--reference",
        str(reference),
    ]
    # Before: a bare JSONDecodeError / BadGzipFile traceback naming no file.
    assert make_report.main([*argv, "--reps", "10"]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and "download_scores.py" in line


def test_a_bad_value_given_to_the_sweep_is_refused_before_any_run(tmp_path, capsys):
    argv = ["--domains", "bsuite", "--dry-run", "--outdir", str(tmp_path / "sweep"), "--batch_size", "0"]
    # Before: planned and started; every run then died with a ZeroDivisionError of its own.
    assert run_suite.main(argv) == 2
    line = one_error_line(capsys)
    assert "'batch_size' is 0, but it must be >= 1" in line and "run bsuite/" in line


def test_images_the_convolutions_cannot_take_are_one_line(tmp_path):
    from dreamer_tf.dreamerv3.agent import check_image_sizes
    from dreamer_tf.spaces import Space

    for size in ((64, 64), (96, 96), (64, 96)):
        check_image_sizes({"image": Space(np.uint8, (*size, 3))}, 4, 4)
    # Atari's raw 210x160 screen (gym_ALE/Pong-v5): 210 does not halve four times.
    with pytest.raises(ConfigError, match=r"'image' is 210x160.*ResizeObservation"):
        check_image_sizes({"image": Space(np.uint8, (210, 160, 3))}, 4, 4)
    with pytest.raises(ConfigError, match="is 32x32"):  # 2x2 after four halvings
        check_image_sizes({"vector": Space(np.float32, (3,)), "image": Space(np.uint8, (32, 32, 3))}, 4, 4)
    check_image_sizes({"image": Space(np.uint8, (32, 32, 3))}, 3, 3)  # fewer stages take it
