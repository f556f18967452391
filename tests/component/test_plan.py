"""The sweep's plan before it starts (dreamer_tf/harness/plan.py, run_suite.py): one line per domain
and per unavailable domain with hand-computed costs, the --max-hours limit, the throughput cache,
the seeds of every budget, and the report's note on smoke runs. Nothing here trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dreamer_tf.harness import plan as plan_module
from dreamer_tf.harness import run_suite
from dreamer_tf.harness import suite as suite_module
from dreamer_tf.harness.plan import Throughput, ThroughputCache, cache_path, hardware, measurement_key
from dreamer_tf.harness.report import build_report
from dreamer_tf.harness.results import Published
from dreamer_tf.harness.suite import Suite, SuiteError

pytestmark = pytest.mark.backend_independent

# Two runnable domains and one that "cannot run here". Presets give the updates per env step:
# size1m (batch 16 x 64 = 1024) at train ratio 1024: 1; size12m at ratio 2048: 2.
TEST_SUITE = """
agents:
  dreamerv3: {label: DreamerV3, presets: [], train_ratio: true, published: dreamerv3}
  ppo: {label: PPO, presets: [], train_ratio: false, published: ppo_fixhp}
budgets:
  paper: {scale: 1.0, presets: [], resources: {cpus: 1, gpus: 0}}
  short: {scale: 0.1, presets: [], resources: {cpus: 1, gpus: 0}}
  hour:
    presets: []
    resources: {cpus: 1, gpus: 0}
    domains: {vec: {tasks: [dummy_disc], steps: 1000}}
  smoke: {steps: 100, max_seeds: 1, tasks: smoke, presets: [], resources: {cpus: 1, gpus: 0},
          report_note: 'a plumbing check, not learning'}
cost:
  startup_s: 10
  cpu:
    env_steps_per_s: 100
    ppo_env_steps_per_s: 1000
    updates_per_s: {size1m: 0.5, size12m: 0.05}
  gpu:
    env_steps_per_s: 100
    ppo_env_steps_per_s: 1000
    updates_per_s: {size1m: 0.5, size12m: 0.05}
domains:
  vec: {preset: size1m, size: size1m, obs: vector, steps: 1000, train_ratio: 1024, seeds: 3,
        tasks: [dummy_disc], smoke_tasks: [dummy_disc], published: null, normalise: raw}
  img: {preset: size12m, size: size12m, steps: 500, train_ratio: 2048, seeds: 2,
        tasks: [dummy_disc, dummy_cont], smoke_tasks: [dummy_disc], published: null, normalise: raw}
  gone: {preset: size1m, size: size1m, steps: 1000, train_ratio: 1024, seeds: 5,
         tasks: [dummy_disc, dummy_cont], smoke_tasks: [dummy_disc], published: null, normalise: raw}
"""
GONE = "nothing is installed (no module 'gone'); install: pip install gone"


@pytest.fixture
def suite_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "suites.yaml"
    path.write_text(TEST_SUITE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        suite_module, "domain_available", lambda d: (False, GONE) if d == "gone" else (True, "built in")
    )
    # The hardware's measurements: size1m 2 updates/s on vectors, 1 on images (size12m has none).
    cache = ThroughputCache(cache_path(), hardware())
    cache.put(measurement_key("size1m", "vector", 1), {"updates_per_s": 2.0})
    cache.put(measurement_key("size1m", "image", 1), {"updates_per_s": 1.0})
    return path


def sweep(suite_file: Path, tmp_path: Path, *args: str) -> int:
    argv = ["--suite", str(suite_file), "--outdir", str(tmp_path / "runs"), "--workers", "1", "--no-measure"]
    return run_suite.main([*argv, *args])


# Hand-computed costs (startup 10 s, env 100 steps/s, PPO 1000 env steps/s):
#   vec, paper: 3 seeds x 1 task; DreamerV3 10 + 1000/100 + 1000 updates / 2 (measured) = 520 s,
#     PPO 10 + 1000/1000 = 11 s: 3 x 531 = 1,593 s = 27 min.
#   img, paper: 2 seeds x 2 tasks; size12m scaled from size1m measured on images: 1 x 0.05/0.5 = 0.1
#     updates/s; DreamerV3 10 + 500/100 + 1000/0.1 = 10,015 s, PPO 10 + 0.5 = 10.5 s:
#     4 x 10,025.5 = 40,102 s. Total 41,695 s = 11.6 h with one run at a time.
#   short (scale 0.1): vec 3 x (10 + 1 + 50 + 10.1) = 213.3 s; img 4 x (10 + 0.5 + 1000 + 10.05)
#     = 4,082.2 s; total 4,295.5 s = 72 min.
#   smoke (100 steps, 1 seed, the smoke task): vec 10 + 1 + 50 + 10.1 = 71.1 s; img 10 + 1 + 2000
#     + 10.1 = 2,021.1 s; total 2,092.2 s = 35 min.   hour: vec only, as paper: 27 min.


def test_plan_prints_a_line_per_domain_and_per_unavailable_domain(suite_file, tmp_path, capsys):
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--dry-run") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    vec = [line for line in lines if line.startswith("  vec ")]
    img = [line for line in lines if line.startswith("  img ")]
    assert len(vec) == 1 and len(img) == 1, out
    assert vec[0].split()[:5] == ["vec", "6", "0", "6e+03", "3e+03"] and "27 min" in vec[0]
    assert "size1m 2 updates/s, measured" in vec[0]
    assert img[0].split()[:5] == ["img", "8", "0", "4e+03", "4e+03"] and "11.1 h" in img[0]  # 40,102 s
    assert "size12m 0.1 updates/s, scaled from size1m (measured)" in img[0]
    gone = [line for line in lines if "gone" in line]
    assert gone == [f"  gone          unavailable here (20 runs not planned): {GONE}"]
    assert out.count(GONE) == 1
    assert "Total: 14 runs (0 done), 1e+04 env steps, 7e+03 updates; about 11.6 h of wall time" in out
    assert "dreamerv3/seed0" not in out  # runs are listed only on request
    assert not (tmp_path / "runs").exists(), "a dry run must not create run folders"
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--dry-run", "--list-runs") == 0
    out = capsys.readouterr().out
    assert "vec/dummy_disc/dreamerv3/seed2" in out and "img/dummy_cont/ppo/seed1" in out
    # A budget that leaves domains out says so on one line.
    assert sweep(suite_file, tmp_path, "--all", "--budget", "hour", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "  not in budget 'hour': img, gone" in out and "Total: 6 runs" in out and "27 min" in out
    # A start-up time measured here replaces the assumed 10 s: 3 x (110 + 10 + 500) + 33 = 1,893 s.
    cache = ThroughputCache(cache_path(), hardware())
    cache.put(measurement_key("size1m", "vector", 1), {"updates_per_s": 2.0, "startup_s": 110.0})
    assert sweep(suite_file, tmp_path, "--all", "--budget", "hour", "--dry-run") == 0
    vec = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  vec ")]
    assert "32 min" in vec[0] and "size1m 2 updates/s, measured, start-up 110 s" in vec[0]


def test_a_plan_over_the_limit_stops_with_the_flags_that_fit(suite_file, tmp_path, capsys, monkeypatch):
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--max-hours", "10") == 2
    captured = capsys.readouterr()
    assert "Total: 14 runs" in captured.out  # the plan first
    err = captured.err
    assert "about 11.6 h of wall time, over --max-hours 10: stopped" in err
    assert "--budget smoke (about 35 min)" in err and "--budget short (about 72 min)" in err
    assert "--budget hour (about 27 min)" in err
    assert "--domains vec (about 27 min)" in err
    assert (
        "--executor ray --address <cluster> with room for 2 runs at a time (2 CPUs)" in err
    )  # 41,695 / 36,000
    assert "--yes" in err
    assert not (tmp_path / "runs").exists(), "nothing may start"
    # --dry-run: the same plan and advice, exit 0.
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--max-hours", "10", "--dry-run") == 0
    assert "would stop here" in capsys.readouterr().err
    # --yes: the sweep starts (a fake executor records what it was given).
    started = []

    class FakeExecutor:
        def describe(self, specs):
            return "fake executor"

        def run(self, specs, on_start, on_end):
            started.extend(specs)

    monkeypatch.setattr(run_suite, "make_executor", lambda *args, **kwargs: FakeExecutor())
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--max-hours", "10", "--yes") == 0
    assert len(started) == 14
    # Under the limit no --yes is needed.
    started.clear()
    assert sweep(suite_file, tmp_path, "--all", "--budget", "paper", "--max-hours", "12") == 0
    assert len(started) == 14


def test_throughput_is_measured_once_per_hardware_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "suites.yaml"
    path.write_text(TEST_SUITE)
    suite = Suite.load(path)
    calls: list[tuple[str, str, int]] = []

    def fake_measure(size, obs, threads):
        calls.append((size, obs, threads))
        return {"updates_per_s": 3.0 if obs == "vector" else 1.5, "startup_s": 40.0}

    here = {"cpu": "Test CPU", "cores": 2, "gpus": [], "backend": "tensorflow"}
    cache = ThroughputCache(tmp_path / "cache.json", here)
    needed = {("size1m", "vector"), ("size12m", "image")}
    rates = Throughput(suite, cache, threads=1, gpu=False)
    rates.prepare(needed, measure=None, log=lambda message: None, measure_fn=fake_measure)
    # size1m is measurable (0.5 updates/s assumed); size12m (0.05) is not: size1m on images stands in.
    assert sorted(calls) == [("size1m", "image", 1), ("size1m", "vector", 1)]
    assert rates.updates_per_s("size1m", "vector") == (3.0, "measured")
    assert rates.startup_s("size1m", "vector") == 40.0 and rates.startup_s("size12m", "image") is None
    assert rates.updates_per_s("size12m", "image") == pytest.approx((0.15, "scaled from size1m (measured)"))
    # Another process on the same hardware: from the cache, no measurement.
    calls.clear()
    again = Throughput(suite, ThroughputCache(tmp_path / "cache.json", dict(here)), threads=1, gpu=False)
    again.prepare(needed, measure=None, log=lambda message: None, measure_fn=fake_measure)
    assert calls == [] and again.updates_per_s("size1m", "vector") == (3.0, "measured")
    # Other hardware (or another thread count) misses the cache.
    other = ThroughputCache(tmp_path / "cache.json", {**here, "gpus": ["NVIDIA H100"]})
    assert other.key != cache.key
    fresh = Throughput(suite, other, threads=1, gpu=False)
    fresh.prepare(needed, measure=False, log=lambda message: None, measure_fn=fake_measure)
    assert calls == [] and fresh.updates_per_s("size1m", "vector") == (
        0.5,
        "assumed (cpu profile of suites.yaml)",
    )
    assert "--no-measure" in fresh.notes[0]
    fresh.prepare(needed, measure=None, log=lambda message: None, measure_fn=fake_measure)
    assert len(calls) == 2
    Throughput(suite, cache, threads=2, gpu=False).prepare(
        {("size1m", "vector")}, measure=None, log=lambda message: None, measure_fn=fake_measure
    )
    assert calls[-1] == ("size1m", "vector", 2)
    # --measure measures again even when cached.
    calls.clear()
    Throughput(suite, cache, threads=1, gpu=False).prepare(
        {("size1m", "vector")}, measure=True, log=lambda message: None, measure_fn=fake_measure
    )
    assert calls == [("size1m", "vector", 1)]
    stored = json.loads((tmp_path / "cache.json").read_text())
    assert set(stored) == {cache.key, other.key} and stored[cache.key]["hardware"] == here
    # A measurement taken while other processes held the cores says so, then and from the cache.
    monkeypatch.setattr(plan_module, "_load", lambda: 5.0)
    busy = Throughput(suite, cache, threads=1, gpu=False)
    busy.prepare({("size1m", "vector")}, measure=True, log=lambda message: None, measure_fn=fake_measure)
    assert "busy (load 5.0 on 2 cores)" in busy.notes[-1] and "--measure" in busy.notes[-1]
    later = Throughput(suite, cache, threads=1, gpu=False)
    later.prepare({("size1m", "vector")}, measure=None, log=lambda message: None, measure_fn=fake_measure)
    assert len(calls) == 2 and "busy (load 5.0 on 2 cores)" in later.notes[0]


def test_budget_seeds_against_hand_computed_counts(tmp_path, monkeypatch):
    path = tmp_path / "suites.yaml"
    path.write_text(TEST_SUITE)
    suite = Suite.load(path)
    jobs = {
        name: len(suite.plan(tmp_path, budget=name, check_available=False).runs) for name in suite.budgets
    }
    # paper and short: vec 3 seeds x 1 task + img 2 seeds x 2 tasks + gone 5 x 2, for 2 agents.
    assert jobs == {"paper": 2 * (3 + 4 + 10), "short": 34, "hour": 2 * 3, "smoke": 2 * 3}
    monkeypatch.setitem(suite.budgets, "short", {"scale": 0.1, "seeds": 5})
    with pytest.raises(SuiteError, match="use 'max_seeds: N'"):
        suite.plan(tmp_path, budget="short", check_available=False)
    monkeypatch.setitem(suite.budgets, "short", {"scale": 0.1, "domains": {"vecc": {}}})
    with pytest.raises(SuiteError, match="budget 'short': Unknown domain 'vecc'. Did you mean: vec"):
        suite.plan(tmp_path, budget="short", check_available=False)


# From the cheapest to the paper's. No budget runs more jobs than the paper, and none runs more jobs
# on a domain, or more env steps in all, than the next (smoke has more domains than hour, so fewer jobs
# in all is not required there).
BUDGET_ORDER = ["smoke", "hour", "short", "paper"]


def test_every_budget_keeps_the_papers_seeds():
    suite = Suite.load()
    # ppo_check (the PPO baselines against the published PPO) is outside the order of sizes.
    special = ["ppo_check"]
    assert set(suite.budgets) == set(BUDGET_ORDER + special), "a new budget: place it in BUDGET_ORDER"
    jobs: dict[str, dict[str, int]] = {}
    steps: dict[str, int] = {}
    for budget in BUDGET_ORDER + special:
        plan = suite.plan("/tmp/unused", budget=budget, agents=["dreamerv3"], check_available=False)
        jobs[budget] = {}
        for spec in plan.runs:
            jobs[budget][spec.domain] = jobs[budget].get(spec.domain, 0) + 1
        steps[budget] = sum(spec.steps for spec in plan.runs)
        seeds: dict[tuple[str, str], set[int]] = {}
        for spec in plan.runs:
            seeds.setdefault((spec.domain, spec.task), set()).add(spec.seed)
        for (domain, task), found in seeds.items():
            paper = int(suite.domains[domain]["seeds"])
            cap = suite.budgets[budget].get("max_seeds")
            assert found == set(range(min(paper, cap or paper))), (budget, task, found)
            if domain == "bsuite":
                assert found == {0}, (budget, task)  # one run per configuration, as bsuite prescribes
    for budget in BUDGET_ORDER + special:
        assert sum(jobs[budget].values()) <= sum(jobs["paper"].values()), (budget, jobs)
    for cheaper, dearer in zip(BUDGET_ORDER, BUDGET_ORDER[1:]):
        assert steps[cheaper] <= steps[dearer], (cheaper, dearer, steps)
        for domain in set(jobs[cheaper]) & set(jobs[dearer]):
            assert jobs[cheaper][domain] <= jobs[dearer][domain], (cheaper, dearer, domain, jobs)
    # short and paper: the same runs (468 bsuite configurations, one run each), fewer steps.
    assert jobs["short"] == jobs["paper"] and jobs["short"]["bsuite"] == 468


def test_the_hour_budget_runs_the_vector_tasks_and_one_atari100k_task_with_small_networks():
    suite = Suite.load()
    plan = suite.plan("/tmp/unused", budget="hour", check_available=False)
    assert {spec.domain for spec in plan.runs} == {"bsuite", "dmc_proprio", "atari100k"}
    assert set(plan.excluded) == set(suite.domains) - {"bsuite", "dmc_proprio", "atari100k"}
    assert sorted((s.domain, s.task, s.agent) for s in plan.runs) == sorted(
        [("bsuite", "bsuite_catch/0", "dreamerv3"), ("bsuite", "bsuite_catch/0", "ppo")]
        + [
            ("dmc_proprio", "dmc_cartpole_balance", "dreamerv3"),
            ("dmc_proprio", "dmc_cartpole_balance", "ppo"),
        ]
        * 5
        + [("atari100k", "atari100k_breakout", "dreamerv3"), ("atari100k", "atari100k_breakout", "ppo")] * 5
    )
    for spec in plan.runs:
        assert spec.size == "small" and spec.cpus == 1
        assert spec.obs == ("image" if spec.domain == "atari100k" else "vector")
        assert spec.steps == {"bsuite": 6000, "dmc_proprio": 3000, "atari100k": 2000}[spec.domain]
        assert dict(spec.flags)["run.train_ratio"] == ("32" if spec.domain == "atari100k" else "256")
        # every run ends training episodes: cartpole's last 1,000 steps, so one env runs them in turn
        assert dict(spec.flags)["run.envs"] == ("1" if spec.domain == "dmc_proprio" else "4")
    # 1 update per env step (train ratio 256 over small's 16 x 16 batches); the arithmetic of suites.yaml:
    # at 5 updates/s, times the CPU's loop factor 1.5, 30 s start-up, 300 env steps/s:
    # catch 30 + 20 + 1,800 s; cartpole 30 + 10 + 900 s.
    dreamer = {spec.domain: spec for spec in plan.runs if spec.agent == "dreamerv3"}
    assert suite.estimate(dreamer["bsuite"], "cpu", updates_per_s=5.0) == {
        "env_steps": 6000.0, "updates": 6000.0, "seconds": 1850.0}  # fmt: skip
    assert suite.estimate(dreamer["dmc_proprio"], "cpu", updates_per_s=5.0)["seconds"] == 940.0
    # PPO's rate depends on the observations (suites.yaml: vector 1,000, image 8 env steps/s on a CPU).
    ppo = {spec.domain: spec for spec in plan.runs if spec.agent == "ppo"}
    assert suite.estimate(ppo["dmc_proprio"], "cpu")["seconds"] == 30.0 + 3000 / 1000
    assert suite.estimate(ppo["atari100k"], "cpu")["seconds"] == 30.0 + 2000 / 8
    # A start-up measured here replaces the assumed 30 s.
    assert (
        suite.estimate(dreamer["dmc_proprio"], "cpu", updates_per_s=5.0, startup_s=75.0)["seconds"] == 985.0
    )


def test_the_report_says_what_a_budget_is(tmp_path, suite_file):
    logdir = tmp_path / "runs" / "vec" / "dummy_disc" / "dreamerv3" / "seed0"
    logdir.mkdir(parents=True)
    spec = {"domain": "vec", "task": "dummy_disc", "agent": "dreamerv3", "seed": 0, "ablation": "",
            "budget": "smoke", "steps": 100, "presets": ["debug"], "flags": {}}  # fmt: skip
    (logdir / "run.json").write_text(json.dumps(spec))
    (logdir / "status.json").write_text(json.dumps({"status": "done", "step": 100, "error": None}))
    (logdir / "config.yaml").write_text("task: dummy_disc\nagent_name: dreamerv3\nseed: 0\n")
    (logdir / "scores.jsonl").write_text(json.dumps({"step": 100, "episode/score": 1.0}) + "\n")
    report = build_report(
        tmp_path / "runs", tmp_path / "report", Suite.load(suite_file), Published(None), reps=10
    )
    assert report["notes"][0] == "Budget 'smoke': a plumbing check, not learning"
    assert "Budget &#x27;smoke&#x27;: a plumbing check" in (tmp_path / "report" / "index.html").read_text()
    assert "a plumbing check, not learning" in Suite.load().budgets["smoke"]["report_note"]


def test_the_plan_names_the_hardware(monkeypatch):
    monkeypatch.setattr(plan_module, "gpu_names", lambda: [])
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    hw = hardware()
    assert hw["backend"] == "jax" and hw["gpus"] == [] and hw["cores"] >= 1 and hw["cpu"]
    assert re.fullmatch(r"[0-9a-f]{16}", plan_module.fingerprint(hw))


def test_ppo_acme_trains_ppo_with_its_preset_and_its_own_rate():
    suite = Suite.load()
    plan = suite.plan("/tmp/out", budget="ppo_check", agents=["ppo", "ppo_acme"], check_available=False)
    assert {(s.domain, s.steps) for s in plan.runs} == {("dmc_proprio", 500000), ("atari100k", 100000)}
    assert len(plan.runs) == 2 * (4 + 2) and {s.seed for s in plan.runs} == {0}
    specs = {(s.domain, s.agent): s for s in plan.runs if s.task in ("atari100k_pong", "dmc_walker_walk")}
    acme = specs["atari100k", "ppo_acme"]
    command = acme.command("python")
    assert command[command.index("--agent") + 1] == "ppo" and acme.trains == "ppo"
    assert command[command.index("--configs") + 1 : command.index("--logdir")] == ["atari100k", "ppo_acme"]
    assert acme.logdir == "/tmp/out/atari100k/atari100k_pong/ppo_acme/seed0"
    assert specs["atari100k", "ppo"].command("python")[command.index("--agent") + 1] == "ppo"
    # suites.yaml cpu: ppo_acme images 80 env steps/s, PPO's default CNN 8; vectors 1,000 for both.
    assert suite.estimate(acme, "cpu")["seconds"] == 30.0 + 100000 / 80
    assert suite.estimate(specs["atari100k", "ppo"], "cpu")["seconds"] == 30.0 + 100000 / 8
    assert suite.estimate(specs["dmc_proprio", "ppo_acme"], "cpu")["seconds"] == 30.0 + 500000 / 1000
    assert suite.estimate(specs["dmc_proprio", "ppo_acme"], "cpu")["updates"] == 0.0
