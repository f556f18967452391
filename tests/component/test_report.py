"""The report: normalisations and aggregate statistics against hand-computed values, tables and
figures from fake runs and fake published curves, the HTML page in headless Chromium, and the
scores download with a fake network.

Everything here is built from small hand-made files (no training, no shared reference data), so the
expected numbers can be worked out on paper; they are spelled out next to each assertion.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamer_tf.harness import download_scores, stats
from dreamer_tf.harness.report import build_report, to_latex, to_markdown
from dreamer_tf.harness.results import (
    Published,
    bin_curve,
    binned_curves,
    crafter_score,
    find_runs,
    window_score,
)
from dreamer_tf.harness.suite import Suite
from tests.helpers.browser import image_check

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ statistics


def test_iqm_drops_a_quarter_at_each_end():
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # mean of 2, 3
    assert stats.iqm([1, 2, 3]) == pytest.approx(2.0)  # floor(0.75) = 0: nothing dropped
    assert stats.iqm([0, 0, 1, 1, 100]) == pytest.approx(2 / 3)  # drops 0 and 100
    scipy_stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(0).normal(size=37)
    assert stats.iqm(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_aggregates_over_tasks_and_runs():
    per_task = [np.array([0.725, 0.575]), np.array([0.5])]
    assert stats.aggregate(per_task, "mean") == pytest.approx(0.575)  # (0.65 + 0.5) / 2
    assert stats.aggregate(per_task, "median") == pytest.approx(0.575)
    assert stats.aggregate(per_task, "iqm") == pytest.approx(0.6)  # mean of the 3 runs
    three = [np.array([1.0]), np.array([2.0]), np.array([10.0])]
    assert stats.aggregate(three, "median") == 2.0
    with pytest.raises(ValueError):
        stats.aggregate(three, "max")


def test_stratified_bootstrap_resamples_within_tasks():
    # One run per task: every replicate is the point estimate.
    assert stats.bootstrap_ci([np.array([3.0]), np.array([5.0])], "mean", reps=200) == (4.0, 4.0)
    # Tasks {0, 1} and {0, 1}: a task mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # aggregate mean is 0 with probability 1/16 > 2.5%: the 95% interval is [0, 1].
    low, high = stats.bootstrap_ci([np.array([0.0, 1.0]), np.array([0.0, 1.0])], "mean", reps=4000)
    assert (low, high) == (0.0, 1.0)
    # Two runs 0.725 and 0.575 of one task: replicate means 0.575, 0.65, 0.725 (1/4, 1/2, 1/4).
    low, high = stats.bootstrap_ci([np.array([0.725, 0.575])], "mean", reps=4000)
    assert (low, high) == pytest.approx((0.575, 0.725))
    # Stratification: a task's runs are never mixed with another task's. Task A's runs are all 0 and
    # task B's all 10, so every replicate's mean is exactly 5 (a pooled bootstrap would vary).
    assert stats.bootstrap_ci([np.zeros(4), np.full(2, 10.0)], "mean", reps=500) == (5.0, 5.0)
    # Same seed, same interval.
    data = [np.random.default_rng(1).normal(size=5) for _ in range(4)]
    assert stats.bootstrap_ci(data, "iqm", seed=3) == stats.bootstrap_ci(data, "iqm", seed=3)


def test_normalisations():
    # Atari human-normalised with pong's random -20.7 and human 14.6.
    assert stats.normalise([-20.7, 14.6, 21.0], -20.7, 14.6) == pytest.approx([0.0, 1.0, 41.7 / 35.3])
    # DMLab: capped at 1.
    assert stats.normalise([5.0, 300.0], 0.0, 100.0, cap=True) == pytest.approx([0.05, 1.0])
    # ProcGen min-max (coinrun 5..10).
    assert stats.normalise(7.5, 5.0, 10.0) == pytest.approx(0.5)
    assert stats.NORMALISATIONS["human_capped"] == ("dmlab30", True)


def test_window_score_and_binning():
    xs, ys = np.array([10.0, 20.0, 30.0, 40.0]), np.array([1.0, 2.0, 3.0, 4.0])
    assert window_score(xs, ys, 40.0, window=0.3) == pytest.approx(3.5)  # points in (28, 40]
    assert window_score(xs, ys, 25.0, window=0.1) == pytest.approx(2.5)  # none in (22.5, 25]: interpolated
    assert np.isnan(window_score(xs, ys, 50.0))  # past the curve
    assert window_score(xs, ys, 50.0, hold_last=True) == 4.0
    edges = np.array([0.0, 20.0, 40.0, 60.0])
    np.testing.assert_allclose(bin_curve(xs, ys, edges, False), [1.5, 3.5, np.nan])
    # Interpolated at the end of an empty bin: 40 lies 3/4 of the way from (10, 0) to (50, 4).
    np.testing.assert_allclose(bin_curve([10.0, 50.0], [0.0, 4.0], edges, True), [0.0, 3.0, 4.0])


def test_crafter_score_of_episodes():
    episodes = pd.DataFrame(
        {
            "episode/log/achievement_collect_wood/max": [1.0, 0.0],
            "episode/log/achievement_wake_up/max": [0.0, 0.0],
        }
    )
    # collect_wood in 50% of the episodes, the other 21 achievements never: exp(log(51) / 22) - 1.
    assert crafter_score(episodes) == pytest.approx(51 ** (1 / 22) - 1)


# ------------------------------------------------------------------ fake runs and published curves


def write_run(root, domain, task, agent, seed, scores, state="done", ablation="", error=None):
    """A run folder as run_suite.py leaves it: run.json, status.json, scores.jsonl, config.yaml."""
    variant = f"{agent}-{ablation}" if ablation else agent
    logdir = root / domain / task.replace("/", "-") / variant / f"seed{seed}"
    logdir.mkdir(parents=True)
    step = max([s for s, _ in scores] + [0])
    spec = {"domain": domain, "task": task, "agent": agent, "seed": seed, "ablation": ablation,
            "budget": "short", "steps": step, "presets": [domain], "flags": {}}  # fmt: skip
    (logdir / "run.json").write_text(json.dumps(spec))
    (logdir / "status.json").write_text(json.dumps({"status": state, "step": step, "error": error}))
    (logdir / "config.yaml").write_text(f"task: {task}\nagent_name: {agent}\nseed: {seed}\n")
    rows = []
    for step_, score in scores:
        row = {"step": step_, "episode/score": score, "episode/length": 10}
        if isinstance(score, tuple):
            row["episode/score"], extra = score
            row.update(extra)
        rows.append(json.dumps(row))
    (logdir / "scores.jsonl").write_text("".join(line + "\n" for line in rows))
    (logdir / "train.log").write_text("Backend: tensorflow on gpu:0 (NVIDIA H200)\n")
    return logdir


def curve(final_two, start=1000, end=20000, every=1000):
    """Episodes every 1000 steps; the last two (inside the final 10%) have the given scores."""
    steps = list(range(start, end + 1, every))
    return [(s, 0.0) for s in steps[:-2]] + list(zip(steps[-2:], final_two))


@pytest.fixture
def fake_runs(tmp_path):
    root = tmp_path / "runs"
    # Atari100k pong: our final scores 9 (seed 0) and 3 (seed 1); boxing: 5 (one seed).
    write_run(root, "atari100k", "atari100k_pong", "dreamerv3", 0, curve([8.0, 10.0]))
    write_run(root, "atari100k", "atari100k_pong", "dreamerv3", 1, curve([2.0, 4.0]))
    write_run(root, "atari100k", "atari100k_boxing", "dreamerv3", 0, curve([5.0, 5.0]))
    write_run(
        root, "atari100k", "atari100k_pong", "ppo", 0, [], state="failed", error="Traceback\nValueError: boom"
    )
    # DMC with an ablation: final scores 100 (full), 50 (abl_no_symlog), 0 (abl_adam).
    write_run(root, "dmc_proprio", "dmc_cartpole_balance", "dreamerv3", 0, curve([100.0, 100.0]))
    write_run(
        root,
        "dmc_proprio",
        "dmc_cartpole_balance",
        "dreamerv3",
        0,
        curve([50.0, 50.0]),
        ablation="abl_no_symlog",
    )
    write_run(
        root, "dmc_proprio", "dmc_cartpole_balance", "dreamerv3", 0, curve([0.0, 0.0]), ablation="abl_adam"
    )
    # Crafter: collect_wood in one of two episodes.
    wood = {"episode/log/achievement_collect_wood/max": 1.0}
    write_run(root, "crafter", "crafter_reward", "dreamerv3", 0, [(100, (1.0, wood)), (200, (0.0, {}))])
    # A domain that could not run: only in the sweep's record.
    unavailable = {"domain": "dmlab", "task": "dmlab_rooms_watermaze", "agent": "dreamerv3", "seed": 0,
                   "steps": 1000, "state": "unavailable", "error": "deepmind_lab is not installed"}  # fmt: skip
    (root / "suite.json").write_text(json.dumps({"command": "run_suite.py --all", "runs": {
        "dmlab/dmlab_rooms_watermaze/dreamerv3/seed0": unavailable}}))  # fmt: skip
    return root


def write_records(path, records):
    with gzip.open(path, "wt") as file:
        json.dump(records, file)


@pytest.fixture
def fake_reference(tmp_path):
    folder = tmp_path / "reference" / "scores"
    folder.mkdir(parents=True)
    # Published Atari100k in frames: 4e4 frames = 1e4 env steps.
    frames = [0, 40000, 80000, 400000]
    write_records(folder / "atari100k-dreamerv3.json.gz", [
        {"task": "atari_pong", "method": "dreamerv3", "seed": 0, "xs": frames, "ys": [None, 0, 10, 20]},
        {"task": "atari_pong", "method": "dreamerv3", "seed": 1, "xs": frames, "ys": [-20, -10, 0, 10]},
    ])  # fmt: skip
    write_records(folder / "dmc_proprio-dreamerv3.json.gz", [
        {"task": "dmc_cartpole_balance", "method": "dreamerv3", "seed": 0, "xs": [1e4, 2e4], "ys": [300, 700]},
    ])  # fmt: skip
    (folder.parent / "baselines.yaml").write_text(
        "atari57_gamer:\n  atari_pong: [-20, 20]\n  atari_boxing: [0, 10]\n"
    )
    return folder


def test_runs_and_published_curves_are_read(fake_runs, fake_reference):
    suite = Suite.load()
    runs = {run.run_id: run for run in find_runs(fake_runs, suite)}
    assert runs["atari100k/atari100k_pong/ppo/seed0"].state == "failed"
    assert runs["atari100k/atari100k_pong/ppo/seed0"].error == "ValueError: boom"
    assert runs["dmlab/dmlab_rooms_watermaze/dreamerv3/seed0"].state == "unavailable"
    assert runs["dmc_proprio/dmc_cartpole_balance/dreamerv3-abl_adam/seed0"].ablation == "abl_adam"
    reference = Published(fake_reference)
    assert reference.available and reference.baselines["atari57_gamer"]["atari_pong"] == (-20.0, 20.0)
    # Frames become env steps (/4); the atari100k task is atari_pong in the published file; None dropped.
    (xs0, ys0), (xs1, _) = reference.runs(suite.domains["atari100k"], "atari100k_pong", "dreamerv3")
    np.testing.assert_allclose(xs0, [1e4, 2e4, 1e5])
    np.testing.assert_allclose(ys0, [0, 10, 20])
    np.testing.assert_allclose(xs1, [0, 1e4, 2e4, 1e5])
    curves = binned_curves(list(runs.values()), reference, suite, {"dreamerv3": "dreamerv3"}, bins=2)
    published = curves[
        (curves["task"] == "atari100k_pong") & (curves["origin"] == "published") & (curves["seed"] == 0)
    ]
    # Bins (0, 1e4] and (1e4, 2e4] in env steps hold the published points 0 and 10 (in frames they would not).
    np.testing.assert_allclose(published["score"], [0.0, 10.0])


def test_report_tables_hold_hand_computed_numbers(fake_runs, fake_reference, tmp_path):
    out = tmp_path / "report"
    report = build_report(fake_runs, out, Suite.load(), Published(fake_reference), reps=4000)
    for name in ("runs", "per_task", "aggregate", "ablations"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    for name in (
        "figures/aggregate.png",
        "figures/curves_atari100k.png",
        "figures/ablations.png",
        "index.html",
    ):
        assert (out / name).stat().st_size > 1000, name
    assert report["published_available"] and report["counts"] == {"done": 7, "failed": 1, "unavailable": 1}

    per_task = pd.read_csv(out / "tables" / "per_task.csv").set_index("task")
    pong = per_task.loc["atari100k_pong"]
    # Ours: final-window means 9 and 3 -> mean 6, population std 3. Published at 2e4 env steps: 10 and 0.
    assert (pong["env_steps"], pong["dreamerv3_mean"], pong["dreamerv3_std"], pong["dreamerv3_seeds"]) == (
        20000,
        6,
        3,
        2,
    )
    assert (pong["dreamerv3_published_mean"], pong["dreamerv3_published_seeds"]) == (5, 2)
    # At the end of the published curves (1e5 env steps): 20 and 10.
    assert (pong["dreamerv3_published_full_mean"], pong["dreamerv3_published_full_steps"]) == (15, 1e5)
    assert pong["ppo_seeds"] == 0 and "1 failed" in pong["runs"] and "boom" in pong["runs"]
    assert "unavailable" in per_task.loc["dmlab_rooms_watermaze", "runs"]

    agg = pd.read_csv(out / "tables" / "aggregate.csv").set_index(["domain", "source"])
    ours = agg.loc[("atari100k", "DreamerV3 (ours)")]
    # Human-normalised ([-20, 20]): pong (9+20)/40 = 0.725 and (3+20)/40 = 0.575; boxing 5/10 = 0.5.
    assert (ours["tasks"], ours["runs"]) == (2, 3)
    assert ours["mean"] == pytest.approx(0.575) and ours["median"] == pytest.approx(0.575)
    assert ours["iqm"] == pytest.approx(0.6)
    published = agg.loc[("atari100k", "DreamerV3 (published, same steps)")]
    # Published at our 2e4 steps (pong only): (10+20)/40 = 0.75 and (0+20)/40 = 0.5.
    assert published["tasks"] == 1 and published["mean"] == pytest.approx(0.625)
    assert (published["mean_lo"], published["mean_hi"]) == pytest.approx((0.5, 0.75))
    crafter = agg.loc[("crafter", "DreamerV3 (ours)")]
    assert crafter["normalisation"].startswith("Crafter score") and crafter["mean"] == pytest.approx(
        51 ** (1 / 22) - 1
    )
    assert agg.loc[("dmc_proprio", "DreamerV3 (ours)"), "mean"] == pytest.approx(100.0)  # raw, unablated only

    ablations = pd.read_csv(out / "tables" / "ablations.csv").set_index("variant")["mean"]
    assert ablations.to_dict() == pytest.approx(
        {"dreamerv3": 1.0, "dreamerv3-abl_no_symlog": 0.5, "dreamerv3-abl_adam": 0.0}
    )
    runs_md = (out / "tables" / "runs.md").read_text()
    assert (
        "unavailable" in runs_md
        and "deepmind_lab is not installed" in runs_md
        and "ValueError: boom" in runs_md
    )
    page = (out / "index.html").read_text()
    assert "curves_atari100k.png" in page and "Commit <code>" in page and "Package versions" in page
    assert "Published curves are absent" not in page


def test_a_second_ppo_configuration_is_shown_beside_ppo_with_one_published_ppo(tmp_path, fake_reference):
    root = tmp_path / "runs"
    write_run(root, "dmc_proprio", "dmc_cartpole_balance", "ppo", 0, curve([10.0, 10.0]))
    write_run(root, "dmc_proprio", "dmc_cartpole_balance", "ppo_acme", 0, curve([30.0, 20.0]))
    write_records(fake_reference / "dmc_proprio-ppo_fixhp.json.gz", [
        {"task": "dmc_cartpole_balance", "method": "ppo_fixhp", "seed": s, "xs": [1e4, 2e4], "ys": [0, y]}
        for s, y in enumerate([40, 60])
    ])  # fmt: skip
    out = tmp_path / "report"
    build_report(root, out, Suite.load(), Published(fake_reference), reps=200)
    per_task = (out / "tables" / "per_task.md").read_text().splitlines()[0]
    assert "| PPO (ours) |" in per_task and "| PPO (Acme) (ours) |" in per_task
    assert per_task.count("(published, same steps)") == 2  # DreamerV3's and PPO's, not PPO's twice
    row = pd.read_csv(out / "tables" / "per_task.csv").iloc[0]
    assert (row["ppo_mean"], row["ppo_acme_mean"], row["ppo_published_mean"]) == (10, 25, 50)
    agg = pd.read_csv(out / "tables" / "aggregate.csv")
    assert sorted(agg["source"]) == [
        "DreamerV3 (published, same steps)", "PPO (Acme) (ours)", "PPO (ours)", "PPO (published, same steps)"
    ]  # fmt: skip
    curves = pd.read_csv(out / "tables" / "domain_curves.csv")
    assert sorted(set(curves["source"])) == [
        "DreamerV3 (published)", "PPO (Acme) (ours)", "PPO (ours)", "PPO (published)"
    ]  # fmt: skip
    summary = pd.read_csv(out / "tables" / "cross_domain.csv")
    assert list(summary["role"]) == [
        "DreamerV3 (published)", "PPO (ours)", "PPO (published)", "PPO (Acme) (ours)"
    ]  # fmt: skip
    # Without runs of it, the optional agent has no column at all.
    build_report(root / "dmc_proprio" / "dmc_cartpole_balance" / "ppo", tmp_path / "plain", Suite.load(),
                 Published(fake_reference), reps=200)  # fmt: skip
    assert "Acme" not in (tmp_path / "plain" / "tables" / "per_task.md").read_text()


def test_a_report_at_an_earlier_step_cuts_every_run_there(fake_runs, fake_reference, tmp_path):
    out = tmp_path / "report"
    build_report(fake_runs, out, Suite.load(), Published(fake_reference), reps=200, at=10000)
    pong = pd.read_csv(out / "tables" / "per_task.csv").set_index("task").loc["atari100k_pong"]
    # Both seeds score 0 in (9,000, 10,000]; the published seeds at 1e4 env steps: 0 and -10.
    assert (pong["env_steps"], pong["dreamerv3_mean"], pong["dreamerv3_seeds"]) == (10000, 0, 2)
    assert (pong["dreamerv3_published_mean"], pong["dreamerv3_published_std"]) == (-5, 5)
    assert "as it stood at 10,000 env steps" in (out / "index.html").read_text()
    # The cut is the run's own: its later episodes are gone, its step capped.
    run = next(r for r in find_runs(fake_runs, Suite.load()) if r.run_id.endswith("pong/dreamerv3/seed0"))
    assert run.at(10000).episodes()["step"].max() == 10000 and run.at(10000).step == 10000
    assert run.at(10**6).step == run.step == 20000


def test_report_says_when_published_curves_are_absent(fake_runs, tmp_path):
    report = build_report(fake_runs, tmp_path / "report", Suite.load(), Published(None), reps=100)
    assert not report["published_available"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Published curves are absent" in page and "DREAMER_REFERENCE_SCORES is not set" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no *.json.gz" in Published(empty).reason


def test_table_writers_escape():
    frame = pd.DataFrame({"task": ["bsuite_catch/0"], "score": ["1 ± 2 | x"], "v": [1234.5]})
    markdown = to_markdown(frame)
    assert "1 ± 2 \\| x" in markdown and "1,234" in markdown
    latex = to_latex(frame, caption="a_b")
    assert r"bsuite\_catch/0" in latex and r"$\pm$" in latex and r"\caption{a\_b}" in latex


def test_make_report_cli(fake_runs, fake_reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DREAMER_REFERENCE_SCORES", str(fake_reference))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_report.py"), "--runs", str(fake_runs), "--out",
         str(tmp_path / "r"), "--reps", "100"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 failed" in result.stderr and (tmp_path / "r" / "index.html").exists()
    from dreamer_tf.harness.make_report import main

    assert main(["--runs", str(fake_runs), "--out", str(tmp_path / "x"), "--at", "-1"]) == 2
    assert "--at -1 must be a positive number" in capsys.readouterr().err


# ------------------------------------------------------------------ the page in a browser


def test_html_report_renders_every_figure_in_chromium(fake_runs, fake_reference, tmp_path):
    out = tmp_path / "report"
    build_report(fake_runs, out, Suite.load(), Published(fake_reference), reps=100)
    figures = len(re.findall(r"<img ", (out / "index.html").read_text()))
    assert figures >= 4  # aggregate, curves of three domains, ablations
    check = image_check(out / "index.html")
    assert check == {"status": "checked", "total": str(figures), "broken": "0"}
    # The check does catch a missing figure.
    (out / "figures" / "aggregate.png").unlink()
    assert image_check(out / "index.html")["broken"] == "1"


# ------------------------------------------------------------------ downloading the published scores


def fake_github(files: dict[str, bytes], listing_error: Exception | None = None):
    def fetch(url: str) -> bytes:
        if "api.github.com" in url:
            if listing_error:
                raise listing_error
            entries = [{"type": "file", "name": n, "download_url": f"https://raw.example/{n}"} for n in files]
            return json.dumps(entries + [{"type": "file", "name": "plot.py", "download_url": "x"}]).encode()
        return files[url.rsplit("/", 1)[-1]]

    return fetch


def test_download_scores_with_a_fake_network(tmp_path):
    record = [{"task": "atari_pong", "method": "dreamerv3", "seed": 0, "xs": [0, 4], "ys": [1, 2]}]
    files = {"atari100k-dreamerv3.json.gz": gzip.compress(json.dumps(record).encode())}
    written = download_scores.download(tmp_path, fetch=fake_github(files))
    assert [p.name for p in written] == ["atari100k-dreamerv3.json.gz"]  # plot.py is not a score file
    assert Published(tmp_path).runs({"published": {"file": "atari100k", "frames_per_step": 4,
                                     "task_prefix": "atari"}}, "atari100k_pong", "dreamerv3")  # fmt: skip
    assert download_scores.download(tmp_path, fetch=fake_github(files)) == []  # present: kept
    with pytest.raises(download_scores.DownloadError, match="not a gzip JSON"):
        download_scores.download(tmp_path, force=True, fetch=fake_github({"x.json.gz": b"<html>"}))


def test_download_scores_offline_says_what_to_do(tmp_path, capsys):
    offline = fake_github({}, listing_error=urllib.error.URLError("Name or service not known"))
    with pytest.raises(download_scores.DownloadError, match="needs internet access"):
        download_scores.download(tmp_path, fetch=offline)

    def no_network(url):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    assert download_scores.main(["--out", str(tmp_path)], fetch=no_network) == 1
    message = capsys.readouterr().err
    assert (
        "needs internet access" in message
        and "git clone --depth 1 https://github.com/danijar/dreamerv3" in message
    )
