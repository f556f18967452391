"""The benchmark suite end to end: sweeps through ``benchmarks/run_suite.py`` and reports through
``scripts/make_report.py``.

- A failing run is recorded and the sweep goes on; an interrupted sweep resumes (the random agent on
  the dummy task, from a small suite file of the test's own, so these take seconds).
- The Ray executor on a local Ray instance.
- CI's smoke sweep: every domain of dreamer_tf/harness/suites.yaml for DreamerV3 and PPO with the smoke
  budget (debug preset, 300 steps), then the report: its files, its tables and the page in Chromium.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dreamer_tf.envs.catalog import domain_status
from dreamer_tf.run.metrics import read_jsonl

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
RUN_SUITE = str(ROOT / "benchmarks" / "run_suite.py")
MAKE_REPORT = str(ROOT / "scripts" / "make_report.py")

# `random` trains nothing (thousands of steps per second); `bogus` is no agent the CLI knows and
# dummy_nope no task of the dummy domain, so their runs fail before the training loop starts.
TEST_SUITE = """
agents:
  random: {label: Random, presets: [], train_ratio: false, published: ''}
  bogus: {label: Bogus, presets: [], train_ratio: false, published: ''}
budgets:
  test:
    scale: 1.0
    max_seeds: 1
    presets: []
    flags: {run.envs: 1, run.parallel: none, env.dummy.image: false, run.log_every: 1, run.save_every: 1}
    resources: {cpus: 1, gpus: 0}
domains:
  quick: {preset: debug, steps: 2000, train_ratio: 8, seeds: 1, tasks: [dummy_disc], published: null, normalise: raw}
  slow: {preset: debug, steps: 200000, train_ratio: 8, seeds: 1, tasks: [dummy_cont], published: null, normalise: raw}
  broken: {preset: debug, steps: 1000, train_ratio: 8, seeds: 1, tasks: [dummy_nope], published: null, normalise: raw}
"""


@pytest.fixture
def suite_file(tmp_path) -> Path:
    path = tmp_path / "suites.yaml"
    path.write_text(TEST_SUITE)
    return path


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RUN_SUITE, "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_failing_run_does_not_stop_the_sweep(suite_file, tmp_path):
    out = tmp_path / "runs"
    args = [
        "--suite",
        str(suite_file),
        "--budget",
        "test",
        "--domains",
        "broken,quick",
        "--agents",
        "bogus,random",
    ]
    result = sweep(*args, "--outdir", str(out), "--workers", "1")
    assert result.returncode == 1, result.stderr  # some runs failed
    runs = read(out / "suite.json")["runs"]
    states = {run_id: entry["state"] for run_id, entry in runs.items()}
    assert states == {
        "broken/dummy_nope/bogus/seed0": "failed",
        "broken/dummy_nope/random/seed0": "failed",
        "quick/dummy_disc/bogus/seed0": "failed",
        "quick/dummy_disc/random/seed0": "done",  # planned after the failures, and still run
    }
    # Failed before the loop (exit code 2): the suite records the CLI's one-line message.
    early = read(out / "quick/dummy_disc/bogus/seed0/status.json")
    assert (
        early["status"] == "failed" and "Unknown agent 'bogus'" in early["error"] and early["returncode"] == 2
    )
    assert "Unknown agent 'bogus'" in runs["quick/dummy_disc/bogus/seed0"]["error"]
    task = read(out / "broken/dummy_nope/random/seed0/status.json")
    assert task["status"] == "failed" and task["returncode"] == 2 and "Traceback" not in task["error"]
    assert "Unknown task 'dummy_nope'" in runs["broken/dummy_nope/random/seed0"]["error"]
    assert "FAILED  broken/dummy_nope/random/seed0" in result.stderr
    # A second sweep retries the failed runs and skips the finished one.
    again = sweep(*args, "--outdir", str(out))
    assert again.returncode == 1 and "1 already done" in again.stderr
    assert (out / "quick/dummy_disc/random/seed0/train.log").read_text().count("=====") == 1
    assert (out / "quick/dummy_disc/bogus/seed0/train.log").read_text().count("=====") == 2
    # The report lists the failed runs with their errors.
    report = subprocess.run(
        [sys.executable, MAKE_REPORT, "--runs", str(out), "--out", str(tmp_path / "report"), "--suite",
         str(suite_file), "--reps", "50"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr
    table = pd.read_csv(tmp_path / "report" / "tables" / "runs.csv").set_index("run")
    assert table.loc["broken/dummy_nope/bogus/seed0", "state"] == "failed"
    assert "Unknown task 'dummy_nope'" in table.loc["broken/dummy_nope/bogus/seed0", "error"]
    assert "Unknown agent" in table.loc["quick/dummy_disc/bogus/seed0", "error"]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def status_of(path: Path) -> str:
    try:
        return read(path)["status"]
    except (OSError, ValueError, KeyError):
        return ""


def test_an_interrupted_sweep_resumes(suite_file, tmp_path):
    out = tmp_path / "runs"
    args = [sys.executable, RUN_SUITE, "--quiet", "--suite", str(suite_file), "--budget", "test", "--domains",
            "quick,slow", "--agents", "random", "--outdir", str(out), "--workers", "2"]  # fmt: skip
    sweep_process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    quick, slow = out / "quick/dummy_disc/random/seed0", out / "slow/dummy_cont/random/seed0"
    wait_for(lambda: status_of(quick / "status.json") == "done", 120, "the quick run to finish")
    wait_for(lambda: status_of(slow / "status.json") == "running", 120, "the slow run to start")
    time.sleep(1.0)
    sweep_process.send_signal(signal.SIGTERM)  # like Ctrl-C: runs checkpoint and stop
    _, stderr = sweep_process.communicate(timeout=300)
    assert sweep_process.returncode == 130, stderr
    assert "stopped; run the same command again to resume" in stderr
    status = read(slow / "status.json")
    assert status["status"] == "interrupted" and 0 < status["step"] < 200_000, status
    assert read(out / "suite.json")["runs"]["slow/dummy_cont/random/seed0"]["state"] == "interrupted"
    assert not (slow / "suite.lock").exists()

    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "1 already done" in result.stderr
    log = (slow / "train.log").read_text()
    assert log.count("=====") == 2 and "Found a checkpoint: resuming." in log
    assert f"at env step {status['step']}" in log  # continued where the interrupted attempt stopped
    assert read(slow / "status.json") == {**read(slow / "status.json"), "status": "done", "step": 200_000}
    assert (quick / "train.log").read_text().count("=====") == 1  # finished runs are not rerun
    runs = read(out / "suite.json")["runs"]
    assert {entry["state"] for entry in runs.values()} == {"done"}


def test_ray_executor_on_a_local_instance(suite_file, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements.txt)")
    out = tmp_path / "runs"
    result = sweep(
        "--suite", str(suite_file), "--budget", "test", "--domains", "quick,broken", "--agents", "random",
        "--outdir", str(out), "--executor", "ray", "--ray-cpus", "2", timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = read(out / "suite.json")
    assert summary["executor"] == "Ray at a local Ray instance (2 CPUs)"
    assert {k: v["state"] for k, v in summary["runs"].items()} == {
        "quick/dummy_disc/random/seed0": "done",
        "broken/dummy_nope/random/seed0": "failed",
    }
    assert read(out / "quick/dummy_disc/random/seed0/status.json")["step"] == 2000
    assert "Unknown task 'dummy_nope'" in summary["runs"]["broken/dummy_nope/random/seed0"]["error"]


def check_trained(run_dir: Path, agent: str) -> None:
    """The run logged training updates and its last losses are finite and sane."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    marker = "train/loss/policy" if agent == "ppo" else "train/loss/"
    trained = [row for row in metrics if any(key.startswith(marker) for key in row)]
    assert trained, f"no training update was logged in {run_dir}"
    losses = {key: value for key, value in trained[-1].items() if key.startswith("train/loss/")}
    assert losses and all(abs(value) < 1e6 for value in losses.values()), (run_dir, losses)


@pytest.mark.slow
@pytest.mark.timeout(2100)
def test_smoke_sweep_of_every_domain_and_its_report(tmp_path):
    """CI's sweep: all domains, DreamerV3 and PPO, smoke budget, each through the CLI with the real
    environments and the paper's preprocessing; every available run trains and its losses are finite.
    Then the report and its page."""
    out = tmp_path / "runs"
    start = time.monotonic()
    result = sweep("--all", "--budget", "smoke", "--outdir", str(out), "--no-measure", timeout=1500)
    sweep_seconds = time.monotonic() - start
    assert result.returncode in (0, 1), result.stderr[-5000:]  # 1: some runs failed (PPO before it lands)
    report_dir = tmp_path / "report"
    report = subprocess.run(
        [sys.executable, MAKE_REPORT, "--runs", str(out), "--out", str(report_dir), "--reps", "200"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-5000:]
    for name in ("index.html", "report.json", "figures/aggregate.png"):
        assert (report_dir / name).exists(), name
    for table in ("runs", "per_task", "aggregate"):
        for ext in ("csv", "md", "tex"):
            assert (report_dir / "tables" / f"{table}.{ext}").exists(), f"{table}.{ext}"

    from dreamer_tf.harness.suite import Suite

    suite = Suite.load()
    runs = pd.read_csv(report_dir / "tables" / "runs.csv").set_index("run")
    per_task = pd.read_csv(report_dir / "tables" / "per_task.csv").set_index("task")
    for domain in suite.domains:
        task = suite.tasks(domain, "smoke")[0]
        available, reason = domain_status(domain)
        assert task in per_task.index, f"{task} missing from the per-task table"
        for agent in ("dreamerv3", "ppo"):
            run = runs.loc[f"{domain}/{task.replace('/', '-')}/{agent}/seed0"]
            if not available:
                assert run["state"] == "unavailable" and reason.split(";")[0] in run["error"]
            else:
                assert run["state"] == "done" and run["step"] >= 300, run.to_dict()
                check_trained(out / domain / task.replace("/", "-") / agent / "seed0", agent)
    assert "unavailable" in (report_dir / "index.html").read_text() or all(
        domain_status(d)[0] for d in suite.domains
    )
    curves = sorted(p.name for p in (report_dir / "figures").glob("curves_*.png"))
    assert "curves_bsuite.png" in curves  # catch episodes last 9 steps: 300 steps hold many

    from tests.helpers.browser import image_check

    html = (report_dir / "index.html").read_text()
    check = image_check(report_dir / "index.html")
    assert (
        check["status"] == "checked" and check["broken"] == "0" and int(check["total"]) == html.count("<img ")
    )
    print(f"smoke sweep: {sweep_seconds:.0f} s, {len(runs)} runs")
