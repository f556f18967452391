"""Run records: ``metrics.jsonl``, ``scores.jsonl``, TensorBoard / W&B / MLflow and a progress bar.

    logger = Logger(logdir, total_steps=config.run.steps, loggers=("jsonl", "tensorboard"), config=config)
    logger.resume(step=0)                          # or the step a checkpoint restored
    logger.episode(score=12.0, length=501, step=4096)                      # -> scores.jsonl
    aggregator.add({"loss/rep": 0.3}); logger.add(aggregator.result(), prefix="train")
    logger.step = 4096; logger.write()                     # -> metrics.jsonl + every active output
    logger.histogram("actions/action", actions)            # -> TensorBoard, W&B
    logger.video("eval/policy", frames); logger.image("report/reward", image)   # media/ + outputs
    logger.progress(4096, updates_per_s=2.1, env_per_s=350.0)              # stderr bar
    logger.close()

The files use the official DreamerV3 layout (a JSON object per line with a
``step`` key and namespaced metric keys), so either side's plotting reads the
other's runs. ``metrics.jsonl`` and ``scores.jsonl`` are always written: they are
the canonical record, and TensorBoard, W&B and MLflow (``run.loggers``, see
``dreamer_tf.run.trackers``) are viewers of the same values. Files are only ever
appended to; ``resume`` drops rows (and TensorBoard events) written after the
checkpoint a run resumes from (they belong to a timeline the run does not
continue) and a line torn by a kill, and puts files that environments write into
the run folder (bsuite's CSV) back as a ``snapshot`` kept in the checkpoint saw
them. TensorBoard events are written with tensorboardX (no TensorFlow needed) and
read back here without it; importing this module never touches a GPU.
"""

from __future__ import annotations

import collections
import json
import math
import os
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

METRICS_FILE = "metrics.jsonl"
SCORES_FILE = "scores.jsonl"
EVENTS_GLOB = "events.out.tfevents.*"
MEDIA_DIR = "media"
HISTOGRAM_SIZE = 100_000  # values per histogram at most


class Aggregator:
    """Averages scalar metrics between two logs.

        agg = Aggregator()
        agg.add({"loss/rep": 0.5}); agg.add({"loss/rep": 0.3})
        agg.result(prefix="train")      # {"train/loss/rep": 0.4}; and resets

    ``agg`` chooses the reduction per call: ``avg`` (default), ``sum``, ``min``,
    ``max`` or ``last``. Values may be Python, numpy or framework scalars;
    arrays are averaged over their elements.
    """

    REDUCTIONS = ("avg", "sum", "min", "max", "last")

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}
        self._reduction: dict[str, str] = {}

    def add(self, metrics: Mapping[str, Any], prefix: str | None = None, agg: str = "avg") -> None:
        assert agg in self.REDUCTIONS, f"unknown reduction {agg!r}, use one of {self.REDUCTIONS}"
        for key, value in metrics.items():
            key = f"{prefix}/{key}" if prefix else key
            if self._reduction.setdefault(key, agg) != agg:
                raise ValueError(f"Metric '{key}' was added with reduction {self._reduction[key]} and {agg}.")
            self._values.setdefault(key, []).append(_to_float(value))

    def result(self, prefix: str | None = None, reset: bool = True) -> dict[str, float]:
        out = {}
        for key, values in self._values.items():
            name = f"{prefix}/{key}" if prefix else key
            reduction = self._reduction[key]
            if reduction == "avg":
                out[name] = float(np.mean(values))
            elif reduction == "sum":
                out[name] = float(np.sum(values))
            elif reduction == "min":
                out[name] = float(np.min(values))
            elif reduction == "max":
                out[name] = float(np.max(values))
            else:
                out[name] = values[-1]
        if reset:
            self.reset()
        return out

    def reset(self) -> None:
        self._values.clear()
        self._reduction.clear()

    def __len__(self) -> int:
        return len(self._values)


class Logger:
    """Writes the run folder's metric records; see the module docstring for the calls.

    ``total_steps`` is only used by the progress bar. ``progress=False`` turns
    the bar off. ``loggers`` names the outputs besides the JSONL files (``run.loggers``:
    ``tensorboard``, ``wandb``, ``mlflow``; ``jsonl`` is accepted and always on);
    ``tensorboard=False`` drops TensorBoard from them. ``config`` (a ``Config`` or mapping) is
    logged as the run's hyperparameters, with nested keys joined by dots. ``records`` are files
    inside the run folder written by others (bsuite's CSV): ``snapshot`` reads them for a
    checkpoint and ``resume`` puts them back as they were then. Files outside the run folder are
    left alone.
    """

    def __init__(
        self,
        logdir: str | Path,
        total_steps: float | None = None,
        progress: bool = True,
        tensorboard: bool = True,
        records: Sequence[str | Path] = (),
        loggers: str | Sequence[str] = ("jsonl", "tensorboard"),
        config: Any = None,
    ) -> None:
        from dreamer_tf.run.trackers import flatten, parse_loggers

        self.logdir = Path(logdir)
        # Files that others (environments) write inside the run folder, kept in step with checkpoints.
        self.records = [
            self.logdir / p
            for p in records
            if (self.logdir / p).resolve().is_relative_to(self.logdir.resolve())
        ]
        self.step = 0
        self.total_steps = total_steps
        self._pending: dict[str, Any] = {}
        self._files: dict[str, TextIO] = {}
        self.loggers = tuple(n for n in parse_loggers(loggers) if tensorboard or n != "tensorboard")
        if config is not None and hasattr(config, "to_dict"):
            config = config.to_dict()
        self._hparams = flatten(config) if config is not None else {}
        self._outputs: list[Any] | None = None  # made at ``resume``, after old events are dropped
        self._bar = _ProgressBar(total_steps) if progress else None
        self._recent_scores: collections.deque[float] = collections.deque(maxlen=20)

    @property
    def outputs(self) -> list[Any]:
        """The active TensorBoard / W&B / MLflow outputs (``dreamer_tf.run.trackers``)."""
        if self._outputs is None:
            from dreamer_tf.run.trackers import make_outputs

            self._outputs = make_outputs(self.loggers, self.logdir, self._hparams)
        return self._outputs

    def resume(self, step: int, records: Mapping[str, str | None] | None = None) -> None:
        """Continue the records at ``step``: drop rows past it and torn lines, then append.

        TensorBoard events past ``step`` go too. ``records`` is a ``snapshot()`` taken with the
        checkpoint: each of its files is put back as it was then (one that did not exist is removed).
        """
        self.step = int(step)
        self.logdir.mkdir(parents=True, exist_ok=True)
        dropped = {
            name: _drop_rows_after(self.logdir / name, self.step) for name in (METRICS_FILE, SCORES_FILE)
        }
        dropped["TensorBoard events"] = sum(
            _drop_events_after(path, self.step) for path in sorted(self.logdir.glob(EVENTS_GLOB))
        )
        for name, count in dropped.items():
            if count:
                print(
                    f"Dropped {count} rows of {name} written after step {self.step} "
                    "(after the checkpoint this run resumes from).",
                    file=sys.stderr,
                )
        for name, text in (records or {}).items():
            path = self.logdir / name
            if path.resolve().is_relative_to(self.logdir.resolve()) and _restore(path, text):
                print(f"Restored {name} as of the checkpoint this run resumes from.", file=sys.stderr)
        self.outputs  # noqa: B018 - opened now, so that a tracker that fails to start fails the start
        if self._bar:
            self._bar.update(self.step, {})

    def snapshot(self) -> dict[str, str | None]:
        """The content of the ``records`` files (``None``: absent), for ``resume`` after a checkpoint."""
        out = {}
        for path in self.records:
            try:
                out[path.relative_to(self.logdir).as_posix()] = path.read_text()
            except FileNotFoundError:
                out[path.relative_to(self.logdir).as_posix()] = None
        return out

    def add(self, metrics: Mapping[str, Any], prefix: str | None = None) -> None:
        """Stage values for the next ``write``; a key added twice keeps the latest value."""
        for key, value in metrics.items():
            self._pending[f"{prefix}/{key}" if prefix else key] = value

    def write(self) -> None:
        """Append the staged values as one row of ``metrics.jsonl`` and send its numbers to the outputs."""
        if not self._pending:
            return
        row = {"step": int(self.step)}
        for key, value in self._pending.items():
            row[key] = _to_json(value)
        self._pending.clear()
        self._append(METRICS_FILE, row)
        scalars = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        for output in self.outputs:
            output.scalars(self.step, scalars)

    def video(self, tag: str, frames: Any, step: int | None = None, fps: float = 20) -> Path:
        """Write ``frames`` (``[T, H, W, C]``, uint8 or floats in ``[0, 1]``) as ``media/<tag>_<step>.gif``.

        The outputs get it too: TensorBoard as an animated image, W&B as a video, MLflow as an artifact.
        """
        from dreamer_tf.run.media import media_name, to_uint8, write_video

        step = int(self.step if step is None else step)
        frames = to_uint8(frames)
        path = write_video(self.logdir / MEDIA_DIR / media_name(tag, step, ".gif"), frames, fps)
        for output in self.outputs:
            output.video(tag, frames, path, step, fps)
        return path

    def image(self, tag: str, image: Any, step: int | None = None) -> Path:
        """Write one ``[H, W, C]`` image as ``media/<tag>_<step>.png`` and send it to the outputs."""
        from dreamer_tf.run.media import encode_png, media_name, to_uint8

        step = int(self.step if step is None else step)
        image = to_uint8(image)
        path = self.logdir / MEDIA_DIR / media_name(tag, step, ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".tmp").write_bytes(encode_png(image))
        path.with_name(path.name + ".tmp").replace(path)
        for output in self.outputs:
            output.image(tag, image, path, step)
        return path

    def histogram(self, tag: str, values: Any, step: int | None = None) -> None:
        """Send the distribution of ``values`` (any shape, flattened; non-finite values dropped) to the
        outputs that draw histograms (TensorBoard, W&B). Nothing goes to the JSONL files."""
        values = np.asarray(values).reshape(-1)
        if values.size > HISTOGRAM_SIZE:  # a strided sample keeps large weight matrices cheap
            values = values[:: -(-values.size // HISTOGRAM_SIZE)]
        values = values.astype(np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            return
        step = int(self.step if step is None else step)
        for output in self.outputs:
            output.histogram(tag, values, step)

    def episode(self, score: float, length: int, step: int | None = None, **extras: Any) -> None:
        """Append one finished training episode to ``scores.jsonl``.

        ``step`` defaults to ``self.step``; ``extras`` become ``episode/<name>`` keys.
        """
        row = {
            "step": int(self.step if step is None else step),
            "episode/score": _to_json(score),
            "episode/length": int(length),
        }
        for key, value in extras.items():
            row[key if key.startswith("episode/") else f"episode/{key}"] = _to_json(value)
        self._append(SCORES_FILE, row)
        self._recent_scores.append(float(score))

    @property
    def recent_score(self) -> float | None:
        """Mean score of the last 20 training episodes, ``None`` before the first."""
        return float(np.mean(self._recent_scores)) if self._recent_scores else None

    def progress(self, step: int, updates_per_s: float | None = None, env_per_s: float | None = None) -> None:
        """Refresh the stderr progress bar (cheap; it redraws at most once a second)."""
        if not self._bar:
            return
        postfix = {}
        if updates_per_s is not None:
            postfix["upd/s"] = f"{updates_per_s:.2f}"
        if env_per_s is not None:
            postfix["env/s"] = f"{env_per_s:.0f}"
        if self.recent_score is not None:
            postfix["score"] = f"{self.recent_score:.4g}"
        self._bar.update(step, postfix)

    def close(self) -> None:
        self.write()
        for file in self._files.values():
            file.close()
        self._files.clear()
        for output in self._outputs or []:
            output.close()
        self._outputs = None
        if self._bar:
            self._bar.close()

    def _append(self, name: str, row: dict[str, Any]) -> None:
        if name not in self._files:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._files[name] = open(self.logdir / name, "a")  # noqa: SIM115 - open for the whole run
        file = self._files[name]
        # One write call per line and a flush: a killed process leaves at most one torn line.
        file.write(json.dumps(row) + "\n")
        file.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file, skipping a torn last line."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _drop_rows_after(path: Path, step: int) -> int:
    if not path.exists():
        return 0
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    kept = []
    for line in lines:
        if not line.endswith("\n"):
            continue  # torn by a kill mid-write
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    return dropped


def _restore(path: Path, text: str | None) -> bool:
    """Make ``path`` hold ``text`` (remove it for ``None``); whether anything changed."""
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = None
    if current == text:
        return False
    if text is None:
        path.unlink()
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _drop_events_after(path: Path, step: int) -> int:
    """Rewrite a TensorBoard event file without the events past ``step`` (and a torn last record).

    Event files are append-only for TensorBoard, so the kept records are copied to a new file that
    replaces the old one atomically. Returns the number of events dropped.
    """
    data = path.read_bytes()
    kept, dropped, offset = [], 0, 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            break  # torn by a kill mid-write
        event_step = _event_step(data[offset + 12 : offset + 12 + length])
        if event_step is not None and event_step > step:
            dropped += 1
        else:
            kept.append(data[offset:end])
        offset = end
    torn = offset < len(data)
    if dropped or torn:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    return dropped


def read_events(path: str | Path, strict: bool = False) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in a TensorBoard event file, in order.

    Reads what ``trackers.TensorBoardOutput`` writes (a TFRecord stream of ``Event`` protocol buffers), without
    TensorFlow. A last record torn by a kill is left out, or with ``strict`` raises ``ValueError``.
    """
    data = Path(path).read_bytes()
    records = list(_records(data))
    if strict and 12 * len(records) + 4 * len(records) + sum(map(len, records)) != len(data):
        raise ValueError(f"{path} ends in a torn record")
    out = []
    for record in records:
        fields = list(_proto_fields(record))
        step = _signed(next((v for n, v in fields if n == 2), 0))
        for summary in (v for n, v in fields if n == 5):  # Event.summary
            for value in (v for n, v in _proto_fields(summary) if n == 1):  # Summary.value
                entry = dict(_proto_fields(value))  # tag (1), simple_value (2)
                if 2 in entry:  # images, histograms and hyperparameters have none
                    out.append((step, entry[1].decode(), struct.unpack("<f", entry[2])[0]))
    return out


def _records(data: bytes):
    """The payloads of a TFRecord stream (length, its CRC, payload, its CRC), up to a torn record."""
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        if offset + 12 + length + 4 > len(data):
            return
        yield data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4


def _event_step(event: bytes) -> int | None:
    """The ``step`` field of an ``Event`` protocol buffer (None if it has none or is malformed)."""
    try:
        return next((_signed(v) for n, v in _proto_fields(event) if n == 2), None)
    except (IndexError, ValueError):
        return None


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(message: bytes):
    """The ``(field number, value)`` pairs of a protocol buffer: varints as ints, the rest as bytes."""
    offset = 0
    while offset < len(message):
        key, offset = _read_varint(message, offset)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, offset = _read_varint(message, offset)
        elif wire == 1:
            value, offset = message[offset : offset + 8], offset + 8
        elif wire == 5:
            value, offset = message[offset : offset + 4], offset + 4
        elif wire == 2:
            size, offset = _read_varint(message, offset)
            value, offset = message[offset : offset + size], offset + size
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire}")
        yield number, value


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def _to_float(value: Any) -> float:
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else float(array.mean())


def _to_json(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return array.item()
    return float(array.astype(np.float64).mean())


# ------------------------------------------------------------------ progress bar


class _ProgressBar:
    """tqdm when installed, else a hand-made one-line bar; quiet redraws when stderr is a file."""

    def __init__(self, total: float | None) -> None:
        self.total = int(total) if total and math.isfinite(total) else None
        interactive = sys.stderr.isatty()
        # Redrawing every second into a log file would bloat it; every minute is plenty there.
        self.interval = 1.0 if interactive else 60.0
        self._last = 0.0
        self._state: tuple[int, dict[str, str]] | None = None
        self._tqdm: Any = None
        self._has_tqdm = True

    def _open_tqdm(self, step: int) -> Any:
        # Created at the first update, so that a resumed run's rate does not count the restored steps.
        try:
            import tqdm
        except ImportError:
            self._has_tqdm = False
            return None
        return tqdm.tqdm(
            total=self.total,
            initial=int(step),
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=self.interval,
            smoothing=0.05,
        )

    def update(self, step: int, postfix: dict[str, str], force: bool = False) -> None:
        self._state = (step, postfix)
        now = time.monotonic()
        if now - self._last < self.interval and not force:
            return
        self._last = now
        if self._tqdm is None and self._has_tqdm:
            self._tqdm = self._open_tqdm(step)
        if self._tqdm is not None:
            self._tqdm.n = int(step)
            self._tqdm.set_postfix(postfix, refresh=False)
            self._tqdm.refresh()
            return
        total = f"/{self.total}" if self.total else ""
        extras = " ".join(f"{k}={v}" for k, v in postfix.items())
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"step {step}{total} {extras}", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._state is not None:
            self.update(*self._state, force=True)  # the final numbers, not the last throttled ones
        if self._tqdm is not None:
            self._tqdm.close()
