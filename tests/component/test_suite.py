"""The suite definition and planning: dreamer_tf/harness/suites.yaml against the catalog, configs and the
budgets of docs/design.md; which runs a sweep makes and where; run states; the dry run; executor errors.
Nothing here trains (tests/smoke/test_sweep.py runs sweeps)."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer_tf.config import read_presets
from dreamer_tf.envs.catalog import BENCHMARKS, domain_status, tasks
from dreamer_tf.harness import executors
from dreamer_tf.harness.suite import RunSpec, Suite, SuiteError, bsuite_steps, write_status
from dreamer_tf.run.train import AGENTS

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
# docs/design.md §4 (Domains): the paper's budgets in env steps (DMC proprio: the published curves' 5e5).
PAPER_STEPS = {"atari": 5.1e7, "atari100k": 1.1e5, "procgen": 1.1e8, "dmlab": 2.6e7, "dmc_proprio": 5e5,
               "dmc_vision": 1e6, "minecraft": 1e8, "crafter": 1.1e6}  # fmt: skip
TRAIN_RATIOS = {"atari": 32, "atari100k": 256, "procgen": 64, "dmlab": 32, "dmc_proprio": 1024,
                "dmc_vision": 256, "bsuite": 1024, "minecraft": 32, "crafter": 512}  # fmt: skip


@pytest.fixture(scope="module")
def suite() -> Suite:
    return Suite.load()


def test_suite_covers_every_domain_with_the_catalog_tasks(suite):
    assert set(suite.domains) == set(BENCHMARKS)
    presets = read_presets()
    for name, entry in suite.domains.items():
        assert suite.tasks(name) == tasks(name), f"{name}: suites.yaml tasks differ from the catalog"
        assert set(suite.tasks(name, "smoke")) <= set(suite.tasks(name)), name
        assert entry["preset"] in presets, f"{name}: no preset {entry['preset']} in configs.yaml"
        assert entry["normalise"] in ("human", "human_capped", "procgen", "raw", "bsuite", "crafter")
    assert len(suite.tasks("atari")) == 57 and len(suite.tasks("atari100k")) == 26
    assert len(suite.tasks("dmlab")) == 30 and len(suite.tasks("bsuite")) == 468
    for name, steps in PAPER_STEPS.items():
        assert float(suite.domains[name]["steps"]) == steps, name
    for name, ratio in TRAIN_RATIOS.items():
        assert suite.domains[name]["train_ratio"] == ratio, name
    assert {"dreamerv3", "ppo"} <= set(suite.agents)
    for name, spec in suite.agents.items():  # each trains an agent class, with presets that exist
        assert spec.get("runs", name) in AGENTS, name
        assert set(spec.get("presets", [])) <= set(presets), name
    assert {"paper", "short", "smoke"} <= set(suite.budgets)
    for domain, names in suite.ablations["tasks"].items():
        assert set(names) <= set(suite.tasks(domain)), domain


def test_budgets(suite):
    assert suite.steps("atari", "atari_pong", "paper") == 51_000_000
    assert suite.steps("atari", "atari_pong", "short") == 2_550_000  # 1/20
    assert suite.steps("dmc_proprio", "dmc_walker_walk", "smoke") == 300
    # bsuite: NUM_EPISODES x the longest episode (catch: 10,000 x 9; deep_sea/0: 10,000 x size 10).
    episode_steps = suite.domains["bsuite"]["episode_steps"]
    assert bsuite_steps("bsuite_catch/0", episode_steps) == 90_000
    assert bsuite_steps("bsuite_deep_sea/0", episode_steps) == 100_000
    assert bsuite_steps("bsuite_memory_len/0", episode_steps) == 20_000  # memory_length 1, plus 1
    assert suite.steps("bsuite", "bsuite_catch/0", "short") == 4_500


def test_smoke_plan_runs_one_task_per_domain_for_both_agents(suite, tmp_path):
    plan = suite.plan(tmp_path, budget="smoke")
    planned = {(spec.domain, spec.agent) for spec in plan.runs}
    missing = {(spec.domain, spec.agent) for spec, _ in plan.unavailable}
    assert planned | missing == {(d, a) for d in suite.domains for a in ("dreamerv3", "ppo")}
    for spec, reason in plan.unavailable:
        assert not domain_status(spec.domain)[0] and "install" in reason
    spec = next(s for s in plan.runs if s.domain == "bsuite" and s.agent == "dreamerv3")
    assert spec.logdir == str(tmp_path / "bsuite" / "bsuite_catch-0" / "dreamerv3" / "seed0")
    command = spec.command("python")
    assert command[:5] == ["python", "-m", "dreamer_tf.run.train", "--task", "bsuite_catch/0"]
    assert command[command.index("--configs") + 1 : command.index("--logdir")] == ["bsuite", "debug"]
    assert "--run.train_ratio" not in command  # smoke keeps the debug preset's ratio
    short = suite.plan(tmp_path, budget="short", domains=["atari100k"], agents=["dreamerv3"], seeds=[0])
    command = short.runs[0].command("python")
    assert command[command.index("--run.train_ratio") + 1] == "256" and short.runs[0].size == "size200m"
    ppo = suite.plan(tmp_path, budget="short", domains=["atari100k"], agents=["ppo"], seeds=[0])
    assert "--run.train_ratio" not in ppo.runs[0].command("python")


def test_task_selection_and_errors(suite, tmp_path):
    plan = suite.plan(tmp_path, tasks=["dmc_walker_walk"], agents=["dreamerv3"], seeds=[0, 2])
    assert sorted((s.domain, s.seed) for s in plan.runs) == [
        ("dmc_proprio", 0), ("dmc_proprio", 2), ("dmc_vision", 0), ("dmc_vision", 2)]  # fmt: skip
    plan = suite.plan(tmp_path, tasks=["dmc_vision:dmc_walker_walk"], agents=["dreamerv3"], seeds=[0])
    assert [s.domain for s in plan.runs] == ["dmc_vision"]
    plan = suite.plan(tmp_path, tasks=["bsuite_catch/*"], agents=["dreamerv3"], budget="short")
    assert len(plan.runs) == 20  # 20 configurations, one run each (bsuite's one seed, in every budget)
    with pytest.raises(SuiteError, match="in none of the domains"):
        suite.plan(tmp_path, tasks=["atari_pongg"])
    with pytest.raises(SuiteError, match="Did you mean: atari100k"):
        suite.plan(tmp_path, domains=["atari100"])
    with pytest.raises(SuiteError, match="Unknown budget"):
        suite.plan(tmp_path, budget="huge", domains=["atari"])


def test_ablation_plan(suite, tmp_path):
    presets = [name for name in read_presets() if name.startswith("abl_")]
    assert suite.ablation_presets() == presets and len(presets) >= 10
    plan = suite.plan(tmp_path, budget="smoke", ablations=presets[:2], main=False)
    variants = sorted(spec.variant for spec in plan.runs)
    assert variants == sorted(["dreamerv3", f"dreamerv3-{presets[0]}", f"dreamerv3-{presets[1]}"])
    spec = next(s for s in plan.runs if s.ablation == presets[0])
    assert spec.presets[-1] == presets[0] and spec.logdir.endswith(f"dreamerv3-{presets[0]}/seed0")
    with pytest.raises(SuiteError, match="Unknown ablation preset"):
        suite.ablation_presets(["abl_nope"])


def test_run_states(tmp_path):
    spec = RunSpec("quick", "dummy_disc", "random", 0, 100, "test", ("debug",), (), str(tmp_path / "run"))
    assert spec.state()[0] == "pending"
    write_status(spec.logdir, "interrupted", 40, None)
    assert spec.state()[0] == "pending"  # resumed from its checkpoint
    write_status(spec.logdir, "done", 100, None)
    assert spec.state()[0] == "done"
    assert RunSpec.from_dict({**spec.to_dict(), "steps": 200}).state()[0] == "pending"  # more steps: resume
    hold = "import sys, time; from dreamer_tf.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); print(1, flush=True); time.sleep(30)"  # noqa: E501
    holder = subprocess.Popen([sys.executable, "-c", hold, spec.logdir], stdout=subprocess.PIPE, text=True)
    try:
        write_status(spec.logdir, "running", 50, None)
        assert holder.stdout.readline().strip() == "1"
        assert spec.state()[0] == "running"  # held by a live process: a second sweep leaves it alone
    finally:
        holder.kill()
        holder.wait()
    assert spec.state()[0] == "pending"  # its process is gone: resume
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_dry_run_prints_the_plan_and_unavailable_domains(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "run_suite.py"), "--all", "--budget", "paper",
               "--dry-run", "--no-measure", "--outdir", str(tmp_path / "runs")]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # One line per domain, one per unavailable domain: not one per run (3,852 lines before).
    assert len(out.splitlines()) < 30, out
    assert "Total:" in out and "updates" in out and "days" in out
    for domain in suite_domains_unavailable_here():
        lines = [line for line in out.splitlines() if line.startswith(f"  {domain} ")]
        assert len(lines) == 1 and "unavailable here" in lines[0] and "install" in lines[0], out
    assert "would stop here" in result.stderr and "--budget hour" in result.stderr
    result = subprocess.run([*command, "--list-runs"], capture_output=True, text=True, timeout=300, env=env)
    assert "atari/atari_alien/dreamerv3/seed0" in result.stdout
    assert "bsuite/bsuite_umbrella_length-22/ppo/seed0" in result.stdout
    assert not (tmp_path / "runs").exists(), "a dry run must not create run folders"


def suite_domains_unavailable_here() -> list[str]:
    return [name for name in BENCHMARKS if not domain_status(name)[0]]


def test_usage_errors_exit_2(tmp_path):
    script = str(ROOT / "benchmarks" / "run_suite.py")
    for args in (["--domains", "atari9"], [], ["--all", "--agents", "sac"]):
        result = subprocess.run(
            [sys.executable, script, *args, "--dry-run"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, (args, result.stderr)
    result = subprocess.run(
        [sys.executable, script, "--all", "--executor", "nope"], capture_output=True, text=True
    )
    assert result.returncode == 2


def test_ray_executor_names_the_package_when_missing(monkeypatch):
    real_import = builtins.__import__

    def without_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_ray)
    with pytest.raises(SuiteError, match=r"needs the 'ray' package.*pip install ray==") as error:
        executors.make_executor("ray")
    assert "--executor local" in str(error.value)


def test_local_pool_size_follows_declared_resources(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    pool = executors.LocalExecutor()
    pool.gpus = 2
    spec = RunSpec("d", "t", "a", 0, 1, "b", (), (), "/tmp/x", cpus=4, gpus=1)
    assert pool.pool_size([spec]) == 2  # 16 cores / 4 = 4, but 2 GPUs / 1 = 2
    assert (
        pool._device_env(1, spec) == {}
        if "CUDA_VISIBLE_DEVICES" in os.environ
        else {"CUDA_VISIBLE_DEVICES": "1"}
    )
    pool.gpus = 0
    assert pool.pool_size([spec]) == 4  # no GPU here: the runs share the CPUs


def test_a_run_that_asks_for_several_gpus_gets_them_and_splits_its_batch(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    pool = executors.LocalExecutor()
    pool.gpus = 4
    spec = RunSpec("d", "t", "a", 0, 1, "b", (), (), "/tmp/x", cpus=4, gpus=2)
    assert pool.pool_size([spec]) == 2  # 4 GPUs / 2 per run
    assert [pool._device_env(slot, spec) for slot in (0, 1)] == [
        {"CUDA_VISIBLE_DEVICES": "0,1"},
        {"CUDA_VISIBLE_DEVICES": "2,3"},
    ]
    suite = Suite.load()
    plan = suite.plan("/tmp/unused", budget="smoke", domains=["dmc_proprio"], gpus=2, check_available=False)
    flags = {spec.agent: dict(spec.flags) for spec in plan.runs}
    assert flags["dreamerv3"]["compile.devices"] == "2"  # the run's batch is split over its two GPUs
    assert "compile.devices" not in flags["ppo"]
    plan = suite.plan("/tmp/unused", budget="smoke", domains=["dmc_proprio"], gpus=1, check_available=False)
    assert all("compile.devices" not in dict(spec.flags) for spec in plan.runs)
    assert executors.LocalExecutor(workers=3).pool_size([spec]) == 3
