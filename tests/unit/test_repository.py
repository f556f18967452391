"""The repository itself: its layers, and no committed file over 1 MB but the pack of a learning check
still running.

Layers: only ``dreamer_tf/backend.py`` imports TensorFlow or JAX (the DMC adapter loads TensorFlow by
name before OSMesa, ``dreamer_tf/envs/dmc.py``), the algorithm and the network blocks never import the
loop or the harness, and no code edits ``sys.path``.

A finished run's pack (a checkpoint of several MB) stays in git's history for good once committed, so
only a check in progress may keep one, one file per seed, replaced in place, and it goes when the run
is done (its ``status.json`` inside the pack says ``done``).
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1 << 20
PACKS = "reports/learning_check/*/seed*.tar.gz"  # learning_check.py --carry reports/learning_check/<task>

pytestmark = pytest.mark.backend_independent


def large_files(root: Path) -> dict[str, int]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    sizes = {}
    for name in listed.decode().split("\0"):
        path = root / name
        if name and path.is_file() and path.stat().st_size > LIMIT:
            sizes[name] = path.stat().st_size
    return sizes


def pack_status(path: Path) -> str:
    """The ``status`` of the run in a ``benchmarks/carry_run.py`` pack."""
    with tarfile.open(path, "r:gz") as tar:
        member = tar.extractfile("status.json")
        return json.loads(member.read()).get("status", "") if member else ""


def offending(root: Path) -> list[str]:
    problems = []
    for name, size in sorted(large_files(root).items()):
        if not fnmatch.fnmatch(name, PACKS):
            problems.append(
                f"{name}: {size / 2**20:.1f} MB; only a running check's pack ({PACKS}) may exceed 1 MB"
            )
        elif pack_status(root / name) == "done":
            problems.append(f"{name}: the pack of a finished run; remove it (its report files stay)")
    return problems


def test_no_committed_file_over_one_megabyte_but_a_running_checks_pack():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")  # an installed package has no repository to check
    problems = offending(ROOT)
    assert not problems, "\n".join(problems)


def write_pack(path: Path, status: str) -> None:
    """A pack-shaped tar.gz over 1 MB (stored without compression) whose run has ``status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=0) as tar:
        for name, data in (
            ("status.json", json.dumps({"status": status}).encode()),
            ("filler", bytes(LIMIT)),
        ):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))


def test_the_check_finds_a_large_file_and_a_finished_pack(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "big.bin").write_bytes(bytes(LIMIT + 1))
    write_pack(tmp_path / "reports" / "learning_check" / "task" / "seed0.tar.gz", "running")
    write_pack(tmp_path / "reports" / "learning_check" / "task" / "seed1.tar.gz", "done")
    write_pack(tmp_path / "reports" / "elsewhere" / "seed0.tar.gz", "running")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    problems = offending(tmp_path)
    assert len(problems) == 3, problems
    assert problems[0].startswith("big.bin") and "only a running check's pack" in problems[0]
    assert problems[1].startswith("reports/elsewhere/seed0.tar.gz")
    assert (
        problems[2].startswith("reports/learning_check/task/seed1.tar.gz") and "finished run" in problems[2]
    )


def imports(path: Path) -> set[str]:
    """Every module a Python file imports, anywhere in it (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_files(folder: str) -> list[Path]:
    return sorted((ROOT / "dreamer_tf" / folder).rglob("*.py"))


def test_only_the_backend_module_imports_tensorflow_or_jax():
    offenders = []
    for path in package_files("."):
        found = {m for m in imports(path) if m.split(".")[0] in ("tensorflow", "jax", "jaxlib")}
        if found and path.relative_to(ROOT).as_posix() != "dreamer_tf/backend.py":
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(found)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["dreamerv3", "nn", "ppo"])
def test_the_algorithm_and_the_networks_never_import_the_loop_or_the_harness(folder):
    offenders = []
    for path in package_files(folder):
        found = {
            m
            for m in imports(path)
            if m.startswith(("dreamer_tf.run", "dreamer_tf.harness", "dreamer_tf.envs"))
        }
        if found:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(found)}")
    assert not offenders, "\n".join(offenders)


def test_no_code_edits_sys_path():
    # Written in two parts so that this line does not match itself.
    pattern = re.compile(r"\bsys\." + r"path\s*(\.\s*(insert|append|extend)|\[|\+?=)")
    offenders = []
    for folder in ("dreamer_tf", "benchmarks", "scripts", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line.split("#")[0]):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
