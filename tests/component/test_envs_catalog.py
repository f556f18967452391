"""The task catalog, domain status and ``python -m dreamer_tf.envs``."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer_tf.envs import DOMAINS, split_task
from dreamer_tf.envs.catalog import BENCHMARKS, domain_status, tasks

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

COUNTS = {"atari": 57, "atari100k": 26, "procgen": 16, "dmlab": 30, "dmc_proprio": 18, "dmc_vision": 20,
          "bsuite": 468, "minecraft": 1, "crafter": 1, "memory_maze": 4}  # fmt: skip


def test_task_counts_and_registry():
    for benchmark, count in COUNTS.items():
        names = tasks(benchmark)
        assert len(names) == len(set(names)) == count, benchmark
        for name in names:
            domain, _ = split_task(name)
            assert domain == BENCHMARKS[benchmark][0] and domain in DOMAINS, name
    assert {"dummy", "gym"} <= set(DOMAINS)
    assert split_task("atari100k_pong") == ("atari100k", "pong")
    assert split_task("memory_maze_9x9") == ("memory_maze", "9x9")
    assert split_task("bsuite_catch/0") == ("bsuite", "catch/0")


def test_names_match_the_published_data():
    folder = Path(
        os.environ.get(
            "DREAMER_REFERENCE_SCORES", Path(__file__).parents[3] / "shared/reference/dreamerv3_scores"
        )
    )
    files = {"atari57": "atari", "atari100k": "atari100k", "procgen": "procgen", "dmlab30": "dmlab",
             "dmc_proprio": "dmc_proprio", "dmc_vision": "dmc_vision", "minecraft_diamond": "minecraft"}  # fmt: skip
    if not folder.exists():
        pytest.skip(f"no published scores at {folder}")
    for prefix, benchmark in files.items():
        path = folder / f"{prefix}-dreamerv3.json.gz"
        with gzip.open(path) as file:
            published = {record["task"] for record in json.load(file)}
        ours = set(tasks(benchmark))
        if benchmark == "atari100k":  # the published data names Atari 100k games atari_<game>
            ours = {name.replace("atari100k_", "atari_") for name in ours}
        assert ours == published, (benchmark, ours ^ published)


def test_domain_status():
    assert domain_status("dummy") == (True, "built in")
    runnable, reason = domain_status("dmlab")
    if not runnable:
        assert "Bazel" in reason
    for name in BENCHMARKS:
        runnable, reason = domain_status(name)
        assert isinstance(runnable, bool) and reason


def run_cli(*args: str) -> str:
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-m", "dreamer_tf.envs", *args], capture_output=True, text=True,
                            cwd=root, env=env, timeout=120, check=True)  # fmt: skip
    return result.stdout


def test_cli_list_and_domain():
    lines = run_cli("--list").strip().splitlines()
    assert lines[0].split()[:3] == ["domain", "tasks", "status"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(BENCHMARKS)
    for name, count in COUNTS.items():
        assert int(rows[name][1]) == count
        assert rows[name][2] in ("runnable", "unavailable")
    atari = run_cli("--domain", "atari").split()
    assert len(atari) == 57 and "atari_pong" in atari
