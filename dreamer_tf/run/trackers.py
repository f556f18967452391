"""Where the logger sends what it records: TensorBoard event files, W&B and MLflow.

    outputs = make_outputs(["tensorboard", "wandb"], logdir, hparams=flatten(config.to_dict()))
    for output in outputs:
        output.scalars(step, {"train/loss/rep": 0.3})
        output.image("report/openl", image, png_path, step)   # [H, W, C] uint8 and its file
        output.video("eval/policy", frames, gif_path, step, fps=20)
        output.histogram("actions/action", values, step)
        output.close()

``metrics.jsonl`` and ``scores.jsonl`` are always written by the ``Logger`` itself (the canonical
record); these outputs are viewers of the same values. ``run.loggers`` picks them (``LOGGERS``);
``check_packages`` names the install command of a missing optional package before a run starts.

TensorBoard events are encoded by tensorboardX: it is maintained, writes scalars, images,
histograms and hyperparameters, and needs no TensorFlow, so a JAX-only machine writes the same
events. Its synchronous ``EventsWriter`` writes each event on the caller's thread and is flushed
after every call: ``SummaryWriter`` queues events for a background thread whose ``flush`` does not
wait for the queue, so a run killed after a checkpoint could lose events the checkpoint covers,
and ``Logger.resume`` relies on the event file holding every event up to the checkpoint.
Videos reach TensorBoard as an animated GIF inside an image summary (the image plugin animates
GIFs), since tensorboardX's ``add_video`` needs moviepy.

W&B and MLflow keep their run's id in the run folder (``trackers.json``) so that a resumed run
continues the same tracker run. Events a resumed run rewinds stay in those trackers (they have no
delete); new values at the same steps are logged again.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")
DEFAULT_LOGGERS = ("jsonl", "tensorboard")
IDS_FILE = "trackers.json"
# The package each optional output imports, and the command that installs it.
PACKAGES = {
    "wandb": ("wandb", "pip install wandb (or pip install 'dreamer_tf[trackers]')"),
    "mlflow": ("mlflow", "pip install mlflow-skinny (or pip install 'dreamer_tf[trackers]')"),
}


# What to check when a tracker fails to start.
START_HINTS = {
    "tensorboard": "check that the run folder is writable",
    "wandb": "run `wandb login`, or set WANDB_MODE=offline to keep the run local",
    "mlflow": "check MLFLOW_TRACKING_URI, or unset it to use <run folder>/mlruns",
}


class MissingTrackerError(ImportError):
    """An output chosen in ``run.loggers`` needs a package that is not installed."""


def parse_loggers(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"jsonl,tensorboard"`` or ``["jsonl", "tensorboard"]`` as a tuple of names, in order, deduplicated."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [item.strip(" []'\"").lower() for item in items]  # "[a, b]" from the command line
    names = [name for name in names if name]
    return tuple(dict.fromkeys(names))


def check_packages(loggers: Iterable[str]) -> None:
    """Raise ``MissingTrackerError`` (one line with the install command) for a missing package."""
    import importlib

    for name in loggers:
        if name not in PACKAGES:
            continue
        module, command = PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingTrackerError(
                f"run.loggers '{name}' needs the package '{module}', which is not installed: {command}."
            ) from None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: ``{"run": {"steps": 5}}`` -> ``{"run.steps": 5}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def make_outputs(
    names: Iterable[str], logdir: str | Path, hparams: Mapping[str, Any] | None = None
) -> list[Any]:
    """The outputs named in ``names`` (``jsonl`` is the logger's own and makes none here)."""
    from dreamer_tf.config import ConfigError

    classes = {"tensorboard": TensorBoardOutput, "wandb": WandbOutput, "mlflow": MlflowOutput}
    outputs = []
    for name in names:
        if name not in classes:
            continue
        try:
            outputs.append(classes[name](Path(logdir), dict(hparams or {})))
        except Exception as error:  # noqa: BLE001 - a tracker's own errors: login, URI, server
            for output in outputs:
                output.close()
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"run.loggers '{name}' could not start: {message} ({START_HINTS[name]})."
            ) from error
    return outputs


def _hparam_value(value: Any) -> bool | int | float | str:
    """A config value as a scalar the trackers accept: lists and ``None`` become text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def _ids(logdir: Path) -> dict[str, str]:
    try:
        return json.loads((logdir / IDS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save_id(logdir: Path, name: str, run_id: str) -> None:
    ids = {**_ids(logdir), name: run_id}
    tmp = logdir / f".{IDS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(ids, indent=1) + "\n")
    os.replace(tmp, logdir / IDS_FILE)


class TensorBoardOutput:
    """``events.out.tfevents.*`` in the run folder, one file per process (see the module docstring)."""

    def __init__(self, logdir: Path, hparams: Mapping[str, Any]) -> None:
        self.logdir = logdir
        self.hparams = hparams
        self._writer: Any = None

    def _write(self, summary: Any, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = EventsWriter(
                str(self.logdir / "events"), filename_suffix=f".{os.getpid()}.dreamer_tf"
            )
            if self.hparams:
                self._hparams()
        self._writer.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))
        self._writer.flush()

    def _hparams(self) -> None:
        from tensorboardX.summary import hparams

        values = {k: _hparam_value(v) for k, v in self.hparams.items()}
        self.hparams = {}  # written once per event file, before the first value
        for summary in hparams(values, {"episode/score": None, "eval_episode/score": None}):
            self._write(summary, 0)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        if values:
            summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
            self._write(summary, step)

    def image(self, tag: str, image: np.ndarray, path: Path, step: int) -> None:
        self._encoded(tag, path.read_bytes(), image.shape, step)

    def video(self, tag: str, frames: np.ndarray, path: Path, step: int, fps: float) -> None:
        from dreamer_tf.run.media import encode_gif

        data = path.read_bytes() if path.suffix == ".gif" else encode_gif(frames, fps)
        self._encoded(tag, data, frames.shape[1:], step)

    def _encoded(self, tag: str, data: bytes, shape: Sequence[int], step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        height, width, channels = shape
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self._write(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        from tensorboardX.summary import histogram

        self._write(histogram(tag, values, bins=64), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbOutput:
    """A W&B run named after the run folder, kept in it (``<logdir>/wandb``), resumed by id.

    The project is ``WANDB_PROJECT`` or ``dreamer_tf``; ``WANDB_MODE=offline`` keeps it local.
    """

    def __init__(self, logdir: Path, hparams: Mapping[str, Any]) -> None:
        import wandb

        self._wandb = wandb
        run_id = _ids(logdir).get("wandb") or uuid.uuid4().hex[:8]
        _save_id(logdir, "wandb", run_id)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "dreamer_tf"),
            name=logdir.name,
            dir=str(logdir),
            id=run_id,
            resume="allow",
            config={k: _hparam_value(v) for k, v in hparams.items()},
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if values:
            self.run.log(dict(values), step=int(step))

    def image(self, tag: str, image: np.ndarray, path: Path, step: int) -> None:
        self.run.log({tag: self._wandb.Image(image)}, step=int(step))

    def video(self, tag: str, frames: np.ndarray, path: Path, step: int, fps: float) -> None:
        # From the written file: an array would need moviepy to encode.
        self.run.log({tag: self._wandb.Video(str(path), format=path.suffix[1:])}, step=int(step))

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.run.log({tag: self._wandb.Histogram(values)}, step=int(step))

    def close(self) -> None:
        self.run.finish()


class MlflowOutput:
    """An MLflow run in experiment ``dreamer_tf``, resumed by id; media become artifacts.

    The tracking URI is ``MLFLOW_TRACKING_URI`` or a file store in the run folder (``mlruns/``).
    Histograms are left out: MLflow has no such chart.
    """

    def __init__(self, logdir: Path, hparams: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (logdir / "mlruns").absolute().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless asked: it is the one store that needs no server
            # and no database package, which is what a run folder of its own wants.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        run_id = _ids(logdir).get("mlflow")
        if run_id is None:
            experiment = self.client.get_experiment_by_name("dreamer_tf")
            experiment_id = (
                experiment.experiment_id if experiment else self.client.create_experiment("dreamer_tf")
            )
            tags = {"mlflow.runName": logdir.name, "mlflow.source.name": socket.gethostname()}
            run_id = self.client.create_run(experiment_id, tags=tags, run_name=logdir.name).info.run_id
            _save_id(logdir, "mlflow", run_id)
            # Params cannot change once logged: only a new run logs them (a resume may change keys).
            params = [Param(k, str(_hparam_value(v))[:MAX_PARAM_VAL_LENGTH]) for k, v in hparams.items()]
            for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, int(step)) for k, v in values.items()]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])

    def image(self, tag: str, image: np.ndarray, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="media")

    def video(self, tag: str, frames: np.ndarray, path: Path, step: int, fps: float) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="media")

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        pass

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
