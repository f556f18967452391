"""Carry a run to another machine in one small file: its last checkpoint, minus what can be rebuilt.

    python benchmarks/carry_run.py pack RUN_DIR PACK.tar.gz       # the last complete checkpoint
    python benchmarks/carry_run.py unpack PACK.tar.gz RUN_DIR     # then resume: python -m dreamer_tf --logdir RUN_DIR ...

A checkpoint of a long CPU run is mostly the latent start states that the replay buffer keeps for
every step (``dyn/deter`` and ``dyn/stoch``: 2 KB of the 2.2 KB per step of ``dmc_proprio``). They
are caches: the policy writes them when it collects a step and every update that replays a step
rewrites them. The pack leaves them out (``--keep-latents`` keeps them) and stores everything else
exactly: agent weights, optimizer, normaliser, slow critic, counters, RNG states, and the replay's
steps, online queue and sampler state, plus the run's ``config.yaml``, ``metrics.jsonl``,
``scores.jsonl`` and ``status.json`` (not the TensorBoard events). ``unpack`` writes a normal
checkpoint folder in which the left-out latents are zero, so until training first replays a step,
a window that starts there starts from a zero latent state instead of the stored one (with the
online queue and uniform sampling, the first few hundred updates refresh nearly all of them).

Pack a run that has stopped (SIGTERM or Ctrl-C write a final checkpoint). ``unpack`` never
overwrites: it refuses a run folder that already has a checkpoint, and checks the pack's file sizes
and hashes before it writes anything. The hashes travel inside the pack, so they catch damage, not
intent: ``unpack`` also refuses any member that is not a plain file named as ``pack`` names them
(absolute paths, ``..``, links), so a crafted pack cannot write outside the run folder.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from dreamer_tf.run.checkpoint import MANIFEST, REPLAY, Checkpoint, CheckpointError

RUN_FILES = ("config.yaml", "metrics.jsonl", "scores.jsonl", "status.json")
LATENT_PREFIX = "dyn/"
INFO = "carry.json"
FORMAT = 1


class CarryError(RuntimeError):
    """A pack or a run folder that cannot be used; the message says which and why."""


def pack(run: str | Path, out: str | Path, keep_latents: bool = False) -> dict:
    """Write the last complete checkpoint of ``run`` (and its record files) to the tar.gz ``out``."""
    run, out = Path(run), Path(out)
    checkpoint = Checkpoint(run / "checkpoint")
    folder = next((p for p in (checkpoint.latest, checkpoint.previous) if (p / MANIFEST).is_file()), None)
    if folder is None:
        raise CarryError(f"{run} has no complete checkpoint ({checkpoint.latest} has no {MANIFEST}).")
    try:
        checkpoint.load()  # verifies every file of the newest complete folder against its manifest
        manifest = json.loads((folder / MANIFEST).read_text())
        files = {name: (folder / name).read_bytes() for name in manifest["files"]}
    except CheckpointError as error:
        raise CarryError(f"Not packing a corrupt checkpoint: {error}") from None
    except FileNotFoundError as error:
        raise CarryError(
            f"The checkpoint changed while it was read ({error.filename}): a run is saving into {run}; "
            "pack it after it stops."
        ) from None
    dropped: set[str] = set()
    members: dict[str, bytes] = {}
    for name, data in files.items():
        if name.startswith(f"{REPLAY}/") and name.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                kept = {k: arrays[k] for k in arrays.files}
            if not keep_latents:
                dropped |= {k for k in kept if k.startswith(LATENT_PREFIX)}
                kept = {k: v for k, v in kept.items() if not k.startswith(LATENT_PREFIX)}
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **kept)
            data = buffer.getvalue()
        members[f"checkpoint/{name}"] = data
    members[f"checkpoint/{MANIFEST}"] = (folder / MANIFEST).read_bytes()
    for name in RUN_FILES:
        if (run / name).is_file():
            members[name] = (run / name).read_bytes()
    status = json.loads(members["status.json"]) if "status.json" in members else {}
    info = {
        "format": FORMAT,
        "packed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(run.resolve()),
        "step": status.get("step"),
        "dropped": sorted(dropped),
        "files": {
            name: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for name, d in members.items()
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in [(INFO, json.dumps(info, indent=1).encode()), *members.items()]:
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime = len(data), int(time.time())
            tar.addfile(entry, io.BytesIO(data))
    tmp.replace(out)
    return info


def check_member(pack_path: Path, entry: tarfile.TarInfo) -> None:
    """Refuse a member that is not a plain file of a pack: a link, a device, an absolute path, a path
    with ``..``, or a name that ``pack`` never writes. Nothing is written before every member passes."""
    name = entry.name
    parts = PurePosixPath(name).parts
    if not entry.isfile():
        raise CarryError(f"{pack_path} is not a pack made by carry_run.py: {name} is not a plain file.")
    if name.startswith("/") or "\\" in name or ".." in parts or not parts or name != "/".join(parts):
        raise CarryError(
            f"{pack_path} is not a safe pack: its member {name!r} would be written outside the run folder."
        )
    if not (name == INFO or name in RUN_FILES or (parts[0] == "checkpoint" and len(parts) > 1)):
        raise CarryError(f"{pack_path} is not a pack made by carry_run.py: unexpected member {name!r}.")


def unpack(pack_path: str | Path, run: str | Path) -> dict:
    """Restore a pack into the run folder ``run`` (created; it must not hold a checkpoint yet)."""
    pack_path, run = Path(pack_path), Path(run)
    if (run / "checkpoint").exists():
        raise CarryError(
            f"{run / 'checkpoint'} already exists; unpack into a new folder, or move it away first "
            "(nothing was changed)."
        )
    try:
        with tarfile.open(pack_path, "r:gz") as tar:
            entries = tar.getmembers()
            for entry in entries:
                check_member(pack_path, entry)
            members = {m.name: tar.extractfile(m).read() for m in entries}
    except (OSError, tarfile.TarError, EOFError, zlib.error) as error:
        raise CarryError(f"{pack_path} is not a readable pack ({type(error).__name__}: {error}).") from None
    if INFO not in members:
        raise CarryError(f"{pack_path} is not a pack made by carry_run.py ({INFO} is missing).")
    info = json.loads(members.pop(INFO))
    if info.get("format") != FORMAT:
        raise CarryError(f"{pack_path} has pack format {info.get('format')}, expected {FORMAT}.")
    for name, expected in info["files"].items():
        data = members.get(name)
        if (
            data is None
            or len(data) != expected["size"]
            or hashlib.sha256(data).hexdigest() != expected["sha256"]
        ):
            raise CarryError(
                f"{pack_path} is corrupt: its file {name} is missing or does not match its hash."
            )

    manifest = json.loads(members[f"checkpoint/{MANIFEST}"])
    index = (
        json.loads(members[f"checkpoint/{REPLAY}/index.json"])
        if f"checkpoint/{REPLAY}/index.json" in members
        else None
    )
    specs = {k: (np.dtype(d), tuple(s)) for k, (d, s) in (index or {}).get("specs", {}).items()}
    run.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=run) as scratch:
        folder = Path(scratch) / "latest"
        for name, data in members.items():
            if not name.startswith("checkpoint/") or name == f"checkpoint/{MANIFEST}":
                continue
            relative = name[len("checkpoint/") :]
            path = folder / relative
            if not path.resolve().is_relative_to(folder.resolve()):  # (check_member refused these already)
                raise CarryError(f"{pack_path} has a member outside the checkpoint: {name}.")
            path.parent.mkdir(parents=True, exist_ok=True)
            if relative.startswith(f"{REPLAY}/") and relative.endswith(".npz"):
                with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                    stored = {k: arrays[k] for k in arrays.files}
                filled = len(stored["stepid"])
                for key in info["dropped"]:
                    dtype, shape = specs[key]
                    stored[key] = np.zeros((filled, *shape), dtype)
                with open(path, "wb") as file:
                    np.savez(file, **stored)
                manifest["files"][relative] = {"size": path.stat().st_size}
            else:
                path.write_bytes(data)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        target = Checkpoint(run / "checkpoint")
        target.directory.mkdir()
        shutil.move(str(folder), str(target.latest))
    for name in RUN_FILES:
        if name in members and not (run / name).exists():
            (run / name).write_bytes(members[name])
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    to_pack = commands.add_parser("pack", help="pack RUN_DIR's last checkpoint into PACK")
    to_pack.add_argument("run", help="run folder (holds checkpoint/)")
    to_pack.add_argument("out", help="the pack to write (.tar.gz)")
    to_pack.add_argument("--keep-latents", action="store_true", help="keep the replay's dyn/* latents")
    to_unpack = commands.add_parser("unpack", help="restore PACK into a new run folder")
    to_unpack.add_argument("pack", help="a pack written by 'pack'")
    to_unpack.add_argument("run", help="run folder to create (must hold no checkpoint)")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            info = pack(args.run, args.out, keep_latents=args.keep_latents)
            size = Path(args.out).stat().st_size
            left_out = ", ".join(info["dropped"]) or "nothing"
            print(
                f"Packed {args.run} at env step {info['step']} into {args.out} ({size / 2**20:.1f} MiB; left out {left_out})."
            )
        else:
            info = unpack(args.pack, args.run)
            print(
                f"Unpacked {args.pack} (env step {info['step']}, packed {info['packed']}) into {args.run}; "
                f"zeroed replay latents: {', '.join(info['dropped']) or 'none'}. Resume with the run's command."
            )
    except CarryError as error:
        print(f"carry_run: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
