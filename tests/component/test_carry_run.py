"""benchmarks/carry_run.py: a pack restores the checkpoint exactly except the replay's latents, which are zero."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
from dreamer_tf.harness import carry as carry_run
from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.replay import Replay

pytestmark = pytest.mark.backend_independent

LENGTH, CHUNK, WORKERS, STEPS = 5, 16, 3, 40


def make_replay(seed: int = 0) -> Replay:
    return Replay(LENGTH, capacity=1000, online=True, chunk=CHUNK, seed=seed)


def filled_replay() -> Replay:
    """Three workers' steps with observations, actions and latents like the agent's (random values)."""
    rng = np.random.default_rng(1)
    replay = make_replay()
    for t in range(STEPS):
        for worker in range(WORKERS):
            replay.add(
                {
                    "position": rng.normal(size=5).astype(np.float32),
                    "action": rng.uniform(-1, 1, size=1).astype(np.float32),
                    "reward": np.float32(rng.normal()),
                    "is_first": t % 13 == 0,
                    "is_last": False,
                    "is_terminal": False,
                    "dyn/deter": rng.normal(size=64).astype(np.float32),
                    "dyn/stoch": rng.integers(0, 4, size=8),
                },
                worker=worker,
            )
    replay.sample(4)  # moves the online queue and the sampler's RNG away from their start
    return replay


def make_run(folder: Path) -> tuple[dict, Replay]:
    state = {
        "agent": {"weights": [np.arange(12, dtype=np.float32).reshape(3, 4)], "step": np.int64(9)},
        "loop": {"env_steps": STEPS * WORKERS, "rng": np.random.default_rng(3).bit_generator.state},
    }
    replay = filled_replay()
    Checkpoint(folder / "checkpoint").save(state, replay=replay)
    (folder / "config.yaml").write_text("task: dummy_disc\n")
    (folder / "scores.jsonl").write_text('{"step": 100, "episode/score": 1.5, "episode/length": 100}\n')
    (folder / "status.json").write_text(json.dumps({"status": "interrupted", "step": STEPS * WORKERS}))
    return state, replay


def test_pack_and_unpack_restore_everything_but_the_latents(tmp_path):
    state, original = make_run(tmp_path / "run")
    info = carry_run.pack(tmp_path / "run", tmp_path / "run.tar.gz")
    assert info["dropped"] == ["dyn/deter", "dyn/stoch"] and info["step"] == STEPS * WORKERS
    full = sum(p.stat().st_size for p in (tmp_path / "run" / "checkpoint").rglob("*.npz"))
    assert (tmp_path / "run.tar.gz").stat().st_size < full / 3  # the latents were most of it

    carry_run.unpack(tmp_path / "run.tar.gz", tmp_path / "copy")
    restored = make_replay(seed=99)  # a different seed: the sampler state must come from the pack
    loaded = Checkpoint(tmp_path / "copy" / "checkpoint").load(replay=restored)
    np.testing.assert_array_equal(loaded["agent"]["weights"][0], state["agent"]["weights"][0])
    assert loaded["loop"] == state["loop"]
    assert len(restored) == len(original) == STEPS * WORKERS
    for name in ("config.yaml", "scores.jsonl", "status.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()

    # The same windows come out in the same order (online queue first, then the same RNG draws),
    # with every stored key intact except the latents, which are zero with their dtype and shape.
    for _ in range(3):
        want, got = original.sample(4), restored.sample(4)
        assert want.keys() == got.keys()
        for key in want:
            if key.startswith("dyn/"):
                assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
                assert not got[key].any() and want[key].any()
            else:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_keep_latents_restores_them_too(tmp_path):
    make_run(tmp_path / "run")
    info = carry_run.pack(tmp_path / "run", tmp_path / "run.tar.gz", keep_latents=True)
    assert info["dropped"] == []
    carry_run.unpack(tmp_path / "run.tar.gz", tmp_path / "copy")
    original, restored = make_replay(), make_replay()
    Checkpoint(tmp_path / "run" / "checkpoint").load(replay=original)
    Checkpoint(tmp_path / "copy" / "checkpoint").load(replay=restored)
    want, got = original.sample(6), restored.sample(6)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_unpack_never_overwrites_a_checkpoint(tmp_path, capsys):
    make_run(tmp_path / "run")
    carry_run.pack(tmp_path / "run", tmp_path / "run.tar.gz")
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoint" / "latest").rglob("*"))
    assert carry_run.main(["unpack", str(tmp_path / "run.tar.gz"), str(tmp_path / "run")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoint" / "latest").rglob("*")) == before


def test_a_corrupt_pack_is_reported_and_writes_nothing(tmp_path, capsys):
    make_run(tmp_path / "run")
    carry_run.pack(tmp_path / "run", tmp_path / "run.tar.gz")
    raw = bytearray(gzip.decompress((tmp_path / "run.tar.gz").read_bytes()))
    weights = raw.find(b"\x93NUMPY")  # the first array file in the tar: flip one byte of its data
    raw[weights + 200] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(gzip.compress(bytes(raw)))
    assert carry_run.main(["unpack", str(tmp_path / "bad.tar.gz"), str(tmp_path / "copy")]) == 1
    assert "is corrupt" in capsys.readouterr().err
    assert not (tmp_path / "copy" / "checkpoint").exists()

    (tmp_path / "cut.tar.gz").write_bytes((tmp_path / "run.tar.gz").read_bytes()[:500])
    assert carry_run.main(["unpack", str(tmp_path / "cut.tar.gz"), str(tmp_path / "copy")]) == 1
    assert "not a readable pack" in capsys.readouterr().err


def test_pack_needs_a_complete_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert carry_run.main(["pack", str(tmp_path / "empty"), str(tmp_path / "x.tar.gz")]) == 1
    assert "has no complete checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()


def crafted_pack(path: Path, members: list[tuple[str, bytes, bytes]]) -> None:
    """A tar.gz with the given (name, type, data) members; type is a tarfile type such as REGTYPE."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data in members:
            entry = tarfile.TarInfo(name)
            entry.type = kind
            if kind == tarfile.SYMTYPE:
                entry.linkname = "/etc/passwd"
                tar.addfile(entry)
            else:
                entry.size = len(data)
                tar.addfile(entry, io.BytesIO(data))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("checkpoint/../../escaped", "file"),
        ("checkpoint//tmp/escaped-absolute", "file"),
        ("/tmp/escaped-absolute", "file"),
        ("../escaped", "file"),
        ("checkpoint/latest/link", "symlink"),
        ("unexpected.txt", "file"),
    ],
)
def test_a_crafted_pack_writes_nothing_outside_or_at_all(tmp_path, capsys, name, kind):
    """Member names and hashes travel in the same tar: a consistent but hostile pack must be refused."""
    import hashlib
    import tarfile

    make_run(tmp_path / "run")
    carry_run.pack(tmp_path / "run", tmp_path / "run.tar.gz")
    with tarfile.open(tmp_path / "run.tar.gz", "r:gz") as tar:
        members = [(m.name, tarfile.REGTYPE, tar.extractfile(m).read()) for m in tar.getmembers()]
    info = json.loads(dict((n, d) for n, _, d in members)[carry_run.INFO])
    payload = b"written by a crafted pack"
    info["files"][name] = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    members = [(n, t, json.dumps(info).encode() if n == carry_run.INFO else d) for n, t, d in members]
    members.append((name, tarfile.SYMTYPE if kind == "symlink" else tarfile.REGTYPE, payload))
    crafted_pack(tmp_path / "crafted.tar.gz", members)
    target = tmp_path / "deep" / "er" / "copy"
    assert carry_run.main(["unpack", str(tmp_path / "crafted.tar.gz"), str(target)]) == 1
    error = capsys.readouterr().err
    assert "not a safe pack" in error or "not a pack made by carry_run.py" in error, error
    assert name.lstrip("/") in error or repr(name) in error or name in error
    assert not target.exists()  # nothing was written, not even the run folder
    assert not (tmp_path / "deep" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/escaped-absolute").exists()
