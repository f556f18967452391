"""``run.loggers``: TensorBoard, W&B (offline) and MLflow (a local file store) hold what
``metrics.jsonl`` holds, media and histograms reach them, a resumed run continues the same tracker
runs, and a bad or missing logger fails up front with one line."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.run.metrics import Logger, _records, read_jsonl
from dreamer_tf.run.train import main
from tests.helpers import wandb_offline

# The random agent and the logger alone: no Keras model is built.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
ALL = "jsonl,tensorboard,wandb,mlflow"


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    """W&B offline and quiet, MLflow to a file store in ``tmp_path``; set here and for subprocesses."""
    values = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MLFLOW_TRACKING_URI": (tmp_path / "mlstore").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def tensorboard_events(logdir: Path):
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for record in _records(path.read_bytes()):
            yield Event.FromString(record)


def mlflow_run(logdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "dreamer_tf"]
    return client, client.search_runs([experiment.experiment_id])


def wandb_history(logdir: Path) -> list[tuple[int, str, object]]:
    files = sorted(logdir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, "no offline W&B run in the run folder"
    return [item for path in files for item in wandb_offline.history(path)]


def test_every_logger_holds_the_scalars_of_metrics_jsonl_and_a_resume_continues_the_same_runs(
    tmp_path, tracker_env
):
    logdir = tmp_path / "run"
    args = [
        sys.executable, "-m", "dreamer_tf", "--task", "dummy_disc", "--agent", "random", "--configs", "debug",
        "--env.dummy.length", "10", "--run.log_every", "0", "--run.progress", "false",
        "--run.loggers", ALL, "--logdir", str(logdir),
    ]  # fmt: skip
    ids = []
    for steps in (24, 40):  # the second run resumes the first
        result = subprocess.run(
            [*args, "--run.steps", str(steps)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        ids.append(json.loads((logdir / "trackers.json").read_text()))
    assert ids[0] == ids[1] and set(ids[0]) == {"wandb", "mlflow"}
    # The end-of-run summary.
    assert "Run done: 40 env steps" in result.stderr
    assert f"Run folder: {logdir}" in result.stderr and "Checkpoint:" in result.stderr
    assert "Last scores:" in result.stderr and "metrics.jsonl" in result.stderr

    rows = read_jsonl(logdir / "metrics.jsonl")
    expected = collections.Counter(
        (row["step"], key, float(value))
        for row in rows
        for key, value in row.items()
        if key != "step" and isinstance(value, (int, float))
    )
    assert {step for step, _, _ in expected} >= {24, 40}

    # TensorBoard: every scalar at its step (as float32), histograms of actions and returns, hparams.
    scalars, histograms, plugins = collections.Counter(), set(), set()
    for event in tensorboard_events(logdir):
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                scalars[(event.step, value.tag, value.simple_value)] += 1
            elif kind == "histo":
                histograms.add(value.tag)
            plugins.add(value.metadata.plugin_data.plugin_name)
    assert scalars == collections.Counter(
        {(step, key, float(np.float32(value))): count for (step, key, value), count in expected.items()}
    )
    assert {"actions/action", "episode/returns"} <= histograms
    assert "hparams" in plugins

    # MLflow: one run (the resume continued it), the same scalars, the config as dotted params.
    client, runs = mlflow_run(logdir)
    assert [run.info.run_id for run in runs] == [ids[0]["mlflow"]]
    run = runs[0]
    seen = collections.Counter(
        (metric.step, key, metric.value)
        for key in {key for _, key, _ in expected}
        for metric in client.get_metric_history(run.info.run_id, key)
    )
    assert seen == expected
    assert run.data.params["run.loggers"] == ALL and run.data.params["env.dummy.length"] == "10"

    # W&B: the same scalars at the same steps (a key logged twice at one step keeps its last value).
    last = {(step, key): value for step, key, value in expected.elements()}
    histogram_parts = ("_", "actions/", "episode/returns/")  # W&B's own keys and histograms' fields
    logged = {
        (step, key): value
        for step, key, value in wandb_history(logdir)
        if not key.startswith(histogram_parts) and isinstance(value, (int, float))
    }
    assert logged == last
    for path in logdir.glob("wandb/offline-run-*/run-*.wandb"):
        run_id, name, config = wandb_offline.run_info(path)
        assert (run_id, name) == (ids[0]["wandb"], "run")  # named after the run folder
        assert config["run.loggers"] == ALL and config["env.dummy.length"] == 10


def test_images_videos_and_histograms_reach_every_output(tmp_path, tracker_env):
    logger = Logger(tmp_path, progress=False, loggers=ALL, config={"agent": {"lr": 1e-4}, "size": [64, 64]})
    logger.resume(0)
    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    logger.image("report/image", frames[0], step=3)
    logger.video("eval/policy", frames, step=3)
    logger.histogram("actions/action", [0, 1, 1, 2, np.nan], step=3)
    logger.step = 3
    logger.add({"loss": 0.5})
    logger.write()
    logger.close()

    images, histograms = {}, {}
    for event in tensorboard_events(tmp_path):
        for value in event.summary.value:
            if value.WhichOneof("value") == "image":
                images[value.tag] = value.image
            elif value.WhichOneof("value") == "histo":
                histograms[value.tag] = value.histo
    assert images["report/image"].encoded_image_string.startswith(b"\x89PNG")
    assert images["eval/policy"].encoded_image_string.startswith(b"GIF8")  # animated in TensorBoard
    assert (images["eval/policy"].height, images["eval/policy"].width) == (16, 16)
    assert histograms["actions/action"].num == 4  # the NaN is left out

    history = {key: value for _, key, value in wandb_history(tmp_path)}
    assert history["report/image/_type"] == "image-file"
    assert history["eval/policy/_type"] == "video-file"
    assert history["actions/action/_type"] == "histogram"
    assert history["loss"] == 0.5

    client, (run,) = mlflow_run(tmp_path)
    artifacts = {info.path for info in client.list_artifacts(run.info.run_id, "media")}
    assert artifacts == {"media/report_image_000000003.png", "media/eval_policy_000000003.gif"}
    assert run.data.params == {"agent.lr": "0.0001", "size": "[64, 64]"}


def test_an_unknown_logger_fails_up_front_with_one_line(tmp_path, capsys):
    logdir = tmp_path / "run"
    code = main(
        ["--task", "dummy_disc", "--agent", "random", "--run.loggers", "jsonl,wand", "--logdir", str(logdir)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "run.loggers" in err
    assert "jsonl, tensorboard, wandb, mlflow" in err
    assert not logdir.exists()


@pytest.mark.parametrize("name, package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_package_is_named_with_its_install_command(
    tmp_path, capsys, monkeypatch, name, package
):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    logdir = tmp_path / "run"
    code = main(
        [
            "--task",
            "dummy_disc",
            "--agent",
            "random",
            "--run.loggers",
            f"jsonl,{name}",
            "--logdir",
            str(logdir),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "pip install" in err and f"'{package}'" in err
    assert not logdir.exists()


def test_loggers_accept_a_list_in_a_preset(tmp_path):
    from dreamer_tf.config import load_config, validate
    from dreamer_tf.run.trackers import parse_loggers

    config = load_config([], ["--run.loggers", "[jsonl, MLflow]"])
    validate(config)
    assert parse_loggers(config.run.loggers) == ("jsonl", "mlflow")
    assert parse_loggers(["tensorboard", "wandb", "tensorboard"]) == ("tensorboard", "wandb")


def test_a_tracker_that_cannot_start_fails_the_run_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    logdir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-m", "dreamer_tf", "--task", "dummy_disc", "--agent", "random", "--configs",
            "debug", "--run.steps", "20", "--run.loggers", "jsonl,mlflow", "--logdir", str(logdir),
        ],  # fmt: skip
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "run.loggers 'mlflow' could not start" in line and "MLFLOW_TRACKING_URI" in line
    assert "Traceback" not in result.stderr
    assert json.loads((logdir / "status.json").read_text())["status"] == "failed"
