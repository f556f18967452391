"""The replay buffer: steps of each environment stored in order, sampled as windows of consecutive steps.

    replay = Replay(length=65, capacity=5_000_000)
    replay.add({**obs_i, **action_i, **extra_i}, worker=i)      # one step of environment i
    batch = replay.sample(16)           # every key (16, 65, ...) plus "stepid" (16, 65) int64
    replay.update({"stepid": batch["stepid"], "dyn/deter": new_deter})   # refresh stored latents
    replay.save(directory); replay.load(directory)

Storage. Each worker (environment) has its own stream of steps, kept in chunks of ``chunk`` steps
per key that are allocated when first needed, so a large capacity costs nothing up front. Every
stored step gets a unique ``stepid`` from a global counter. When more than ``capacity`` steps are
stored, the oldest step (lowest stepid, whatever its worker) is dropped, so the buffer always
holds exactly the stepids ``[first, next)``; a chunk is freed once all its steps are dropped.

Sampling. A sample is a window of ``length`` consecutive steps of one worker; windows may cross
episode boundaries (the first step of a window is marked ``is_first`` and a step followed by
``is_first`` is marked ``is_last``, as in the official code, so the model resets at episode
starts) and chunk boundaries. Windows are drawn uniformly among all that lie fully in the buffer.
With ``online=True`` (the official "online" queue), each time a worker has added ``length`` new
steps since its last queued window, that fresh window is queued, and ``sample`` takes queued
windows first (oldest first) before drawing uniformly, so every collected step is trained on
soon after it arrives.

Not thread-safe: the training loop adds, samples and updates from one thread.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
INDEX = "index.json"
_CHUNK_FILE = re.compile(r"^[0-9a-f]+-w-?\d+-c\d+-v\d+\.npz$")


class _Chunk:
    """``size`` steps of one worker for every key; ``version`` counts writes (for incremental saves)."""

    __slots__ = ("arrays", "version")

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.version = 0


class _Stream:
    """The steps of one worker: positions ``[start, end)`` are stored; chunk ``k`` holds ``[k*C, (k+1)*C)``."""

    __slots__ = ("chunks", "end", "first_chunk", "next_online", "start")

    def __init__(self) -> None:
        self.chunks: deque[_Chunk] = deque()
        self.first_chunk = 0  # chunk index of chunks[0]
        self.start = 0
        self.end = 0
        self.next_online = 0  # start position of the next window for the online queue


class Replay:
    """Windows of ``length`` consecutive steps per worker, ``capacity`` steps in all; see the module docstring.

    Args:
        length: steps per sampled window (``batch_length + replay_context`` in the loop).
        capacity: steps stored at most; the oldest are dropped first.
        online: sample freshly completed windows first (the official online queue).
        chunk: steps per storage chunk and per saved file.
        seed: seed of the uniform sampler.
    """

    def __init__(
        self, length: int, capacity: int, online: bool = True, chunk: int = 1024, seed: int = 0
    ) -> None:
        if int(length) < 1 or int(chunk) < 1:
            raise ValueError(f"Replay length and chunk must be positive, got length={length}, chunk={chunk}.")
        if int(capacity) < int(length):
            raise ValueError(f"Replay capacity {capacity} is smaller than one window of length {length}.")
        self.length = int(length)
        self.capacity = int(capacity)
        self.online = bool(online)
        self.chunk = int(chunk)
        self._rng = np.random.default_rng(seed)
        self._specs: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None
        self._streams: dict[int, _Stream] = {}
        # stepid -> (worker, position), in chunks of ``chunk`` stepids; _log[0] holds stepids from
        # _log_base * chunk on. Lets update() find a step and eviction find the oldest step's worker.
        self._log: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._log_base = 0
        self._first = 0  # oldest stored stepid
        self._next = 0  # stepid of the next step added
        self._queue: deque[tuple[int, int]] = deque()
        self._counts = {"inserts": 0, "samples": 0, "updates": 0}
        # For incremental saves: (worker, chunk index) -> (version, file name) of the last file written
        # or loaded for that chunk, and the folder it is in.
        self._uid = secrets.token_hex(4)
        self._files: dict[tuple[int, int], tuple[int, str]] = {}
        self._last_dir: Path | None = None
        self._pool: list[_Chunk] = []  # at most one freed chunk, kept for reuse

    # ------------------------------------------------------------------ adding

    def __len__(self) -> int:
        return self._next - self._first

    def add(self, step: dict[str, Any], worker: int = 0) -> None:
        """Append one step of environment ``worker``: observation, action and agent extras.

        Keys starting with ``log/`` are not stored. The first step fixes the keys, shapes and dtypes.
        """
        step = {k: v for k, v in step.items() if not k.startswith("log/")}
        if "stepid" in step:
            raise ValueError("'stepid' is assigned by the replay buffer; remove it from the step.")
        if self._specs is None:
            self._specs = {}
            for key, value in step.items():
                value = np.asarray(value)
                self._specs[key] = (value.dtype, value.shape)
        elif step.keys() != self._specs.keys():
            missing = sorted(set(self._specs) - set(step))
            extra = sorted(set(step) - set(self._specs))
            raise KeyError(
                f"Replay.add: the step lacks key(s) {missing} and has new key(s) {extra} "
                "compared with the first step added."
            )
        worker = int(worker)
        stream = self._streams.get(worker)
        if stream is None:
            stream = self._streams[worker] = _Stream()
        position = stream.end
        offset = position % self.chunk
        if offset == 0:
            stream.chunks.append(self._new_chunk())
        chunk = stream.chunks[-1]
        for key, value in step.items():
            target = chunk.arrays[key]
            value = np.asarray(value)
            if value.shape != target.shape[1:] or not np.can_cast(value.dtype, target.dtype, "same_kind"):
                raise ValueError(
                    f"Replay.add: '{key}' has shape {value.shape} and dtype {value.dtype}, but earlier steps had "
                    f"{target.shape[1:]} and {target.dtype}."
                )
            target[offset] = value
        chunk.arrays["stepid"][offset] = self._next
        chunk.version += 1
        log_offset = self._next % self.chunk
        if log_offset == 0:
            self._log.append((np.zeros(self.chunk, np.int64), np.zeros(self.chunk, np.int64)))
        self._log[-1][0][log_offset] = worker
        self._log[-1][1][log_offset] = position
        self._next += 1
        stream.end += 1
        self._counts["inserts"] += 1
        if self.online and stream.end - stream.next_online >= self.length:
            self._queue.append((worker, stream.next_online))
            stream.next_online += self.length
        while len(self) > self.capacity:
            self._evict_oldest()

    def _new_chunk(self) -> _Chunk:
        assert self._specs is not None
        if self._pool:
            chunk = self._pool.pop()
            chunk.version = 0
            return chunk
        arrays = {key: np.empty((self.chunk, *shape), dtype) for key, (dtype, shape) in self._specs.items()}
        arrays["stepid"] = np.empty(self.chunk, np.int64)
        return _Chunk(arrays)

    def _evict_oldest(self) -> None:
        stepid = self._first
        worker, position = self._locate(np.array([stepid]))
        stream = self._streams[int(worker[0])]
        assert stream.start == position[0], (stream.start, position, stepid)
        stream.start += 1
        if stream.start % self.chunk == 0:
            # Every step of the oldest chunk is gone.
            # Recycle the freed chunk: writing into fresh memory costs a page fault per 4 KB.
            freed = stream.chunks.popleft()
            if not self._pool:
                self._pool.append(freed)
            self._files.pop((int(worker[0]), stream.first_chunk), None)
            stream.first_chunk += 1
        self._first += 1
        if self._first % self.chunk == 0:
            self._log.popleft()
            self._log_base += 1

    def _locate(self, stepids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Worker and position of stored ``stepids`` (all within ``[first, next)``)."""
        blocks = stepids // self.chunk - self._log_base
        offsets = stepids % self.chunk
        workers = np.empty(len(stepids), np.int64)
        positions = np.empty(len(stepids), np.int64)
        for block in np.unique(blocks):
            mask = blocks == block
            log_workers, log_positions = self._log[int(block)]
            workers[mask] = log_workers[offsets[mask]]
            positions[mask] = log_positions[offsets[mask]]
        return workers, positions

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """``batch_size`` windows: every stored key as (B, length, ...) plus ``stepid`` (B, length) int64."""
        picks: list[tuple[int, int]] = []
        while self._queue and len(picks) < batch_size:
            worker, position = self._queue.popleft()
            if position >= self._streams[worker].start:  # skip windows evicted while queued
                picks.append((worker, position))
        if len(picks) < batch_size:
            picks.extend(self._uniform(batch_size - len(picks)))
        self._counts["samples"] += batch_size
        return self._gather(picks)

    def peek(self, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """``batch_size`` uniform windows like ``sample``, drawn with their own generator from ``seed``.

        The online queue, the sampling generator and the counts stay as they were: reports and other
        read-only looks at the buffer must not change the course of training.
        """
        return self._gather(self._uniform(batch_size, np.random.default_rng(seed)))

    def _uniform(self, count: int, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
        workers = list(self._streams)
        starts = np.array([self._streams[w].start for w in workers], np.int64)
        windows = np.array([self._streams[w].end for w in workers], np.int64) - starts - self.length + 1
        windows = np.maximum(windows, 0)
        total = int(windows.sum())
        if total == 0:
            longest = max((s.end - s.start for s in self._streams.values()), default=0)
            raise ValueError(
                f"Replay.sample: no window of {self.length} consecutive steps of one worker is stored yet "
                f"({len(self)} steps in {len(self._streams)} worker stream(s), the longest has {longest}). "
                "Collect more steps before sampling."
            )
        index = (self._rng if rng is None else rng).integers(0, total, size=count)
        ends = np.cumsum(windows)
        which = np.searchsorted(ends, index, side="right")
        positions = starts[which] + index - (ends[which] - windows[which])
        return [(workers[w], int(p)) for w, p in zip(which, positions)]

    def _gather(self, picks: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        assert self._specs is not None
        batch, length, size = len(picks), self.length, self.chunk
        out = {key: np.empty((batch, length, *shape), dtype) for key, (dtype, shape) in self._specs.items()}
        out["stepid"] = np.empty((batch, length), np.int64)
        for row, (worker, position) in enumerate(picks):
            stream = self._streams[worker]
            assert stream.start <= position and position + length <= stream.end, (worker, position, length)
            filled = 0
            while filled < length:
                block, offset = divmod(position + filled, size)
                count = min(length - filled, size - offset)
                arrays = stream.chunks[block - stream.first_chunk].arrays
                for key, array in arrays.items():
                    out[key][row, filled : filled + count] = array[offset : offset + count]
                filled += count
        if "is_first" in out:
            # A window starts a sequence for the model whatever step it starts at; a step followed by a
            # first step ended its episode (e.g. an episode abandoned by a reset).
            out["is_first"][:, 0] = True
            if "is_last" in out:
                out["is_last"][:, :-1] |= out["is_first"][:, 1:]
        return out

    # ------------------------------------------------------------------ updating

    def update(self, data: dict[str, Any]) -> None:
        """Overwrite stored values of the steps ``data["stepid"]`` (any shape, e.g. (B, T)).

        Every other key must be a stored key with values of shape ``stepid.shape + step shape``.
        Steps no longer in the buffer are skipped.

            replay.update({"stepid": batch["stepid"][:, :1], "dyn/deter": deter[:, None]})
        """
        stepids = np.asarray(data["stepid"], np.int64)
        values = {k: np.asarray(v) for k, v in data.items() if k != "stepid"}
        if not values:
            return
        specs = self._specs or {}
        for key, value in values.items():
            if key not in specs:
                raise KeyError(f"Replay.update: '{key}' is not a stored key (stored: {sorted(specs)}).")
            expected = stepids.shape + specs[key][1]
            if value.shape != expected:
                raise ValueError(
                    f"Replay.update: '{key}' has shape {value.shape}, expected stepid shape + step shape = {expected}."
                )
        flat = stepids.reshape(-1)
        keep = np.nonzero((flat >= self._first) & (flat < self._next))[0]
        self._counts["updates"] += len(keep)
        if not len(keep):
            return
        workers, positions = self._locate(flat[keep])
        blocks = positions // self.chunk
        groups = workers * (1 << 40) + blocks
        flat_values = {k: v.reshape((-1, *specs[k][1]))[keep] for k, v in values.items()}
        for group in np.unique(groups):
            mask = groups == group
            worker, block = int(workers[mask][0]), int(blocks[mask][0])
            stream = self._streams[worker]
            chunk = stream.chunks[block - stream.first_chunk]
            rows = positions[mask] - block * self.chunk
            for key, value in flat_values.items():
                chunk.arrays[key][rows] = value[mask]
            chunk.version += 1

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict[str, float]:
        """Counters for the logger, which prefixes them with ``replay/`` (``replay/size`` and so on)."""
        chunks = sum(len(s.chunks) for s in self._streams.values())
        nbytes = sum(a.nbytes for s in self._streams.values() for c in s.chunks for a in c.arrays.values())
        inserts = self._counts["inserts"]
        return {
            "size": len(self),
            "inserts": inserts,
            "samples": self._counts["samples"],
            "updates": self._counts["updates"],
            "online_queue": len(self._queue),
            "chunks": chunks,
            "ram_gb": nbytes / 1e9,
            # Replayed steps per inserted step, the achieved train ratio.
            "ratio": self.length * self._counts["samples"] / inserts if inserts else 0.0,
        }

    def bytes_per_step(self, example_step: dict[str, Any]) -> int:
        """Bytes one stored step of this shape takes, bookkeeping included."""
        data = sum(np.asarray(v).nbytes for k, v in example_step.items() if not k.startswith("log/"))
        return int(data + 8 + 16)  # stepid, and the stepid -> (worker, position) log

    def memory_estimate(self, example_step: dict[str, Any]) -> str:
        """E.g. ``"capacity 5,000,000 steps x 27.7 KB = 138 GB"``, with a warning when RAM is too small."""
        per_step = self.bytes_per_step(example_step)
        total = per_step * self.capacity
        text = f"capacity {self.capacity:,} steps x {_human(per_step)} = {_human(total)}"
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = 0
        if ram and total > ram:
            text += f" (more than this machine's {_human(ram)} of RAM: lower --replay.size)"
        return text

    # ------------------------------------------------------------------ saving

    def save(self, directory: str | Path, previous: str | Path | None = None) -> None:
        """Write the buffer to ``directory`` (created if needed) so that ``load`` restores it exactly.

        Chunk files are written to a temporary name and renamed; ``index.json`` is replaced last,
        and only then are files the new index does not name deleted. A crash at any point leaves the
        previous save in ``directory`` loadable. Chunks unchanged since they were last saved or
        loaded are not written again: they are reused in place, or hard-linked from ``previous``
        (or the folder of the last save or load) when ``directory`` is a new folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sources = [directory] + [Path(p) for p in (previous, self._last_dir) if p is not None]
        streams = {}
        referenced = set()
        for worker, stream in self._streams.items():
            names = []
            for number, chunk in enumerate(stream.chunks):
                block = stream.first_chunk + number
                name = self._save_chunk(directory, sources, worker, block, stream, chunk)
                names.append(name)
                referenced.add(name)
            streams[str(worker)] = {
                "start": stream.start,
                "end": stream.end,
                "next_online": stream.next_online,
                "first_chunk": stream.first_chunk,
                "chunks": names,
            }
        index = {
            "format": FORMAT,
            "length": self.length,
            "chunk": self.chunk,
            "online": self.online,
            "first_stepid": self._first,
            "next_stepid": self._next,
            "specs": {k: [np.dtype(d).str, list(s)] for k, (d, s) in (self._specs or {}).items()},
            "streams": streams,
            "queue": [list(item) for item in self._queue],
            "rng": self._rng.bit_generator.state,
            "counts": self._counts,
        }
        _atomic_write(directory / INDEX, json.dumps(index).encode())
        _fsync_dir(directory)
        for path in directory.iterdir():
            stale_chunk = _CHUNK_FILE.match(path.name) and path.name not in referenced
            if path.is_file() and (stale_chunk or path.name.endswith(".tmp")):
                path.unlink()
        self._last_dir = directory

    def _save_chunk(
        self, directory: Path, sources: list[Path], worker: int, block: int, stream, chunk
    ) -> str:
        saved = self._files.get((worker, block))
        if saved is not None and saved[0] == chunk.version:
            name = saved[1]
            for source in sources:
                if not (source / name).is_file():
                    continue
                if source.resolve() == directory.resolve():
                    return name
                try:
                    os.link(source / name, directory / name)
                    return name
                except OSError:
                    break  # another filesystem, or no hard links: write it
        name = f"{self._uid}-w{worker}-c{block}-v{chunk.version}.npz"
        filled = min(self.chunk, stream.end - block * self.chunk)
        tmp = directory / f"{name}.tmp"
        with open(tmp, "wb") as file:
            np.savez(file, **{key: array[:filled] for key, array in chunk.arrays.items()})
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, directory / name)
        self._files[(worker, block)] = (chunk.version, name)
        return name

    def load(self, directory: str | Path) -> None:
        """Replace the contents with a save of ``directory``: steps, stepids, online queue and RNG state.

        The save's ``chunk`` must equal this buffer's; a smaller ``capacity`` drops the oldest steps.
        """
        directory = Path(directory)
        if not (directory / INDEX).is_file():
            raise FileNotFoundError(f"No replay buffer saved in {directory} ({INDEX} is missing).")
        index = json.loads((directory / INDEX).read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"Replay save {directory} has format {index.get('format')}, expected {FORMAT}.")
        if index["chunk"] != self.chunk:
            raise ValueError(
                f"Replay save {directory} uses chunk={index['chunk']} but this buffer chunk={self.chunk}; "
                f"set --replay.chunk {index['chunk']}."
            )
        specs = {k: (np.dtype(d), tuple(s)) for k, (d, s) in index["specs"].items()}
        self._specs = specs or None
        self._first, self._next = int(index["first_stepid"]), int(index["next_stepid"])
        self._streams, self._files, self._pool = {}, {}, []
        self._uid = secrets.token_hex(4)  # new files never take the name of a loaded one
        self._log_base = self._first // self.chunk
        blocks = (self._next - 1) // self.chunk - self._log_base + 1 if self._next > self._first else 0
        self._log = deque(
            (np.zeros(self.chunk, np.int64), np.zeros(self.chunk, np.int64)) for _ in range(blocks)
        )
        for key, info in index["streams"].items():
            worker, stream = int(key), _Stream()
            stream.start, stream.end = int(info["start"]), int(info["end"])
            stream.next_online, stream.first_chunk = int(info["next_online"]), int(info["first_chunk"])
            for number, name in enumerate(info["chunks"]):
                chunk = self._new_chunk()
                with np.load(directory / name, allow_pickle=False) as data:
                    filled = len(data["stepid"])
                    for array_key, array in chunk.arrays.items():
                        array[:filled] = data[array_key]
                stepids = chunk.arrays["stepid"][:filled]
                stream.chunks.append(chunk)
                block = stream.first_chunk + number
                self._files[(worker, block)] = (chunk.version, name)
                live = np.nonzero(stepids >= self._first)[0]
                self._write_log(stepids[live], worker, block * self.chunk + live)
            self._streams[worker] = stream
        self._queue = deque((int(w), int(p)) for w, p in index["queue"])
        self._rng.bit_generator.state = index["rng"]
        self._counts = {k: int(v) for k, v in index["counts"].items()}
        self._last_dir = directory
        while len(self) > self.capacity:
            self._evict_oldest()

    def _write_log(self, stepids: np.ndarray, worker: int, positions: np.ndarray) -> None:
        blocks = stepids // self.chunk - self._log_base
        offsets = stepids % self.chunk
        for block in np.unique(blocks):
            mask = blocks == block
            self._log[int(block)][0][offsets[mask]] = worker
            self._log[int(block)][1][offsets[mask]] = positions[mask]


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 999.5 or unit == "TB":
            break
        size /= 1000.0
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.0f} {unit}" if size >= 99.5 else f"{size:.3g} {unit}"


def _atomic_write(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
