"""Crash-safe checkpoints: nested dicts of arrays and scalars, plus the replay buffer.

    checkpoint = Checkpoint(logdir / "checkpoint")
    checkpoint.save({"agent": agent.save(), "loop": counters}, replay=replay)
    state = checkpoint.load(replay=replay)      # None when there is no checkpoint yet

A save writes a complete new folder ``tmp-<pid>-<n>/`` (every file fsynced, the
manifest last), then swaps it in with renames: ``latest -> previous``,
``tmp -> latest``, and only then deletes ``previous``. A SIGKILL at any moment
leaves either ``latest`` or ``previous`` complete, and ``load`` finds it.

On disk a checkpoint is ``state.json`` (the tree, with arrays replaced by
references), one ``<key>.npz`` per top-level key holding that key's arrays
(no pickles), an optional ``replay/`` folder written by ``replay.save``, and
``manifest.json`` with the size and SHA-256 of the state files (replay files:
size only, since they can be many gigabytes). ``load`` checks the manifest and
raises ``CheckpointError`` naming the corrupt file; it never deletes or changes
anything, so the user can inspect or move the folders.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
STATE = "state.json"
REPLAY = "replay"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read; the message names the file."""


class Checkpoint:
    """The ``checkpoint/`` folder of a run: ``latest`` and, briefly during a save, ``previous``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._counter = itertools.count()
        self.loaded: Path | None = None  # the folder the last ``load`` read

    @property
    def latest(self) -> Path:
        return self.directory / "latest"

    @property
    def previous(self) -> Path:
        return self.directory / "previous"

    def exists(self) -> bool:
        """Whether a checkpoint folder that ``load`` would try is present."""
        return _complete(self.latest) or _complete(self.previous)

    def save(self, state: dict[str, Any], replay: Any = None) -> Path:
        """Write ``state`` (and ``replay`` through its ``save(dir, previous)``) and make it ``latest``.

        ``state`` maps string keys to nested dicts, lists and tuples whose leaves
        are numpy arrays or scalars, Python scalars, strings or None.
        """
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise TypeError(f"Checkpoint state must be a dict with string keys, got {type(state).__name__}.")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        tmp = self.directory / f"tmp-{os.getpid()}-{next(self._counter)}"
        tmp.mkdir()
        try:
            self._write(tmp, state, replay)
        except Exception:
            # A failed write (a full disk) leaves no half-written folder behind; ``latest`` is untouched.
            # An abort (a second Ctrl-C) leaves it like a kill would, for the next start to remove.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if _complete(self.latest):
            # ``previous`` is only left over from a crash after ``latest`` was complete.
            shutil.rmtree(self.previous, ignore_errors=True)
            os.rename(self.latest, self.previous)
        elif self.latest.exists():
            shutil.rmtree(self.latest)
        os.rename(tmp, self.latest)
        _fsync_dir(self.directory)
        shutil.rmtree(self.previous, ignore_errors=True)
        return self.latest

    def _write(self, tmp: Path, state: dict[str, Any], replay: Any) -> None:
        files: dict[str, dict[str, Any]] = {}
        tree: dict[str, Any] = {}
        for key, value in state.items():
            arrays: dict[str, np.ndarray] = {}
            tree[key] = _encode(value, arrays, key)
            if arrays:
                name = f"{_safe_name(key)}.npz"
                if name in files:
                    raise ValueError(f"Checkpoint keys collide on the file name {name}; rename '{key}'.")
                with open(tmp / name, "wb") as file:
                    np.savez(file, **arrays)
                files[name] = _describe(tmp / name, digest=True)
        (tmp / STATE).write_text(json.dumps({"format": FORMAT, "tree": tree}))
        files[STATE] = _describe(tmp / STATE, digest=True)
        if replay is not None:
            # Unchanged replay chunks are hard-linked from the last checkpoint instead of rewritten.
            replay.save(tmp / REPLAY, previous=self.latest / REPLAY if _complete(self.latest) else None)
            for path in sorted((tmp / REPLAY).rglob("*")):
                if path.is_file():
                    files[path.relative_to(tmp).as_posix()] = _describe(path, digest=False)
        for name in files:
            _fsync_file(tmp / name)
        # The manifest is written last: a folder with a manifest is a complete checkpoint.
        manifest = tmp / MANIFEST
        manifest.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1))
        _fsync_file(manifest)
        _fsync_dir(tmp)

    def load(self, replay: Any = None, fallback: bool = False) -> dict[str, Any] | None:
        """The newest complete checkpoint's state, or ``None`` if there is none.

        With ``replay``, its ``load(dir)`` restores the buffer from the same
        checkpoint. A corrupt ``latest`` raises ``CheckpointError``; with
        ``fallback=True`` a complete ``previous`` (left by a crash during a save)
        is used instead.
        """
        candidates = [p for p in (self.latest, self.previous) if _complete(p)]
        if not candidates:
            return None
        errors = []
        for folder in candidates:
            try:
                return self._load_folder(folder, replay)
            except CheckpointError as error:
                if not fallback:
                    others = [str(p) for p in candidates if p != folder]
                    hint = (
                        f" An older complete checkpoint exists at {others[0]}; load(fallback=True) uses it."
                        if others
                        else " Move the checkpoint folder away to start the run afresh."
                    )
                    raise CheckpointError(f"{error} Nothing was modified.{hint}") from error
                errors.append(str(error))
        raise CheckpointError(" ".join(errors) + " Nothing was modified.")

    def _load_folder(self, folder: Path, replay: Any) -> dict[str, Any]:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"Checkpoint file {folder / MANIFEST} is corrupt ({error}).") from None
        for name, info in files.items():
            path = folder / name
            problem = _verify(path, info)
            if problem:
                raise CheckpointError(f"Checkpoint file {path} is corrupt ({problem}).")
        try:
            stored = json.loads((folder / STATE).read_text())
            tree = stored["tree"]
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"Checkpoint file {folder / STATE} is corrupt ({error}).") from None
        state = {}
        for key, value in tree.items():
            name = f"{_safe_name(key)}.npz"
            arrays: Any = {}
            if name in files:
                try:
                    with np.load(folder / name, allow_pickle=False) as data:
                        arrays = {k: data[k] for k in data.files}
                except Exception as error:  # noqa: BLE001 - any failure to read means a bad file
                    raise CheckpointError(f"Checkpoint file {folder / name} is corrupt ({error}).") from None
            try:
                state[key] = _decode(value, arrays)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(
                    f"Checkpoint file {folder / STATE} does not match {folder / name} ({error})."
                ) from None
        if replay is not None:
            self._load_replay(folder, replay)
        self.loaded = folder
        return state

    def load_folder(self, folder: str | Path) -> dict[str, Any]:
        """The state of one complete checkpoint folder (``latest`` or a copy of it), verified against
        its manifest like ``load``; the replay buffer is not read. Raises ``CheckpointError``."""
        folder = Path(folder)
        if not _complete(folder):
            raise CheckpointError(f"{folder} is not a complete checkpoint (no {MANIFEST}).")
        return self._load_folder(folder, None)

    def load_replay(self, replay: Any) -> None:
        """Restore ``replay`` from the checkpoint that the last ``load`` returned (already verified).

        Lets a caller read the state first, and build the replay buffer only once the state said
        which one it needs.
        """
        if self.loaded is None:
            raise CheckpointError(f"No checkpoint of {self.directory} was loaded before its replay buffer.")
        self._load_replay(self.loaded, replay)

    def _load_replay(self, folder: Path, replay: Any) -> None:
        if replay is not None:
            if not (folder / REPLAY).exists():
                raise CheckpointError(
                    f"Checkpoint {folder} holds no replay buffer ({folder / REPLAY} missing)."
                )
            try:
                replay.load(folder / REPLAY)
            except Exception as error:
                raise CheckpointError(
                    f"Checkpoint replay buffer {folder / REPLAY} cannot be loaded "
                    f"({type(error).__name__}: {error})."
                ) from error

    def remove_stale(self) -> list[Path]:
        """Delete the ``tmp-<pid>-<n>`` folders of saves that a crash or a full disk interrupted
        (never complete, never loaded), except those of another live process; returns them."""
        removed = []
        for path in self.directory.glob("tmp-*"):
            pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
            if pid.isdigit() and process_alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` other than this one runs on this machine."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# ------------------------------------------------------------------ tree encoding


def _encode(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    """JSON-able tree; arrays go into ``arrays`` under a reference name."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"Checkpoint dict keys must be strings; '{path}' has key {key!r}.")
        return {"dict": {k: _encode(v, arrays, f"{path}/{k}") for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, arrays, f"{path}/{i}") for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if hasattr(value, "__array__") or isinstance(value, np.generic):
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"Checkpoint cannot store object arrays ('{path}').")
        name = f"a{len(arrays)}"
        dtype = array.dtype.name
        if not _standard_dtype(array.dtype):
            # bfloat16 and friends (ml_dtypes): store the raw bits, restore the type by name.
            array = array.view(f"u{array.dtype.itemsize}")
        arrays[name] = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        return {"array": name, "dtype": dtype, "scalar": isinstance(value, np.generic)}
    raise TypeError(f"Checkpoint cannot store '{path}' of type {type(value).__name__}.")


def _decode(node: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    if "dict" in node:
        return {k: _decode(v, arrays) for k, v in node["dict"].items()}
    if "list" in node:
        return [_decode(v, arrays) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, arrays) for v in node["tuple"])
    if "value" in node:
        return node["value"]
    array = arrays[node["array"]]
    if array.dtype.name != node["dtype"]:
        array = array.view(_dtype_by_name(node["dtype"]))
    return array[()] if node.get("scalar") else array


def _standard_dtype(dtype: np.dtype) -> bool:
    try:
        return np.dtype(dtype.name) == dtype and dtype.kind in "biufc"
    except TypeError:
        return False


def _dtype_by_name(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # ships with keras/jax/tensorflow wherever bfloat16 arrays exist

        return np.dtype(getattr(ml_dtypes, name))


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key) or "_"


# ------------------------------------------------------------------ files


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def _describe(path: Path, digest: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"size": path.stat().st_size}
    if digest:
        info["sha256"] = _sha256(path)
    return info


def _verify(path: Path, info: dict[str, Any]) -> str:
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != info["size"]:
        return f"size {size} bytes, expected {info['size']}"
    if "sha256" in info and _sha256(path) != info["sha256"]:
        return "checksum mismatch"
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the renames durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
