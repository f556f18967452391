"""The report's paper-style figures, ours against every published method: each figure's data against
hand-computed values, the files written (PNG at print resolution and PDF) and ``--all-methods``.

The runs and published curves are small hand-made files in ``tmp_path``; the expected numbers are
worked out next to each assertion.
"""

from __future__ import annotations

import pandas as pd
import pytest

from dreamer_tf.harness import comparisons, figures, make_report
from dreamer_tf.harness.report import build_report
from dreamer_tf.harness.results import Published, binned_curves, final_scores, find_runs
from dreamer_tf.harness.suite import Suite
from tests.component.test_report import write_records, write_run

pytestmark = pytest.mark.backend_independent

A, B = "dmc_cartpole_balance", "dmc_walker_walk"


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    # DMC proprio (raw scores), 2 bins of 1e4 env steps. DreamerV3 on A, seed 0: bins 150, 400, final
    # (window (18000, 20000]) 500; seed 1: bins 50, 600, final 600. On B: bins 10, 30, final 30.
    write_run(
        root,
        "dmc_proprio",
        A,
        "dreamerv3",
        0,
        [(5000, 100.0), (10000, 200.0), (15000, 300.0), (20000, 500.0)],
    )
    write_run(root, "dmc_proprio", A, "dreamerv3", 1, [(5000, 50.0), (20000, 600.0)])
    write_run(root, "dmc_proprio", B, "dreamerv3", 0, [(10000, 10.0), (20000, 30.0)])
    # PPO on A only: final 7.
    write_run(root, "dmc_proprio", A, "ppo", 0, [(10000, 5.0), (20000, 7.0)])
    # Atari100k pong (human-normalised with [-20, 20]): final (8 + 10) / 2 = 9 -> 0.725.
    write_run(root, "atari100k", "atari100k_pong", "dreamerv3", 0, [(19000, 8.0), (20000, 10.0)])
    return root


@pytest.fixture
def reference(tmp_path):
    folder = tmp_path / "reference" / "scores"
    folder.mkdir(parents=True)

    def record(task, method, seed, xs, ys):
        return {"task": task, "method": method, "seed": seed, "xs": xs, "ys": ys}

    x = [10000, 20000, 500000]
    write_records(folder / "dmc_proprio-d4pg.json.gz", [
        record(A, "d4pg", 0, x, [100, 300, 900]), record(A, "d4pg", 1, x, [200, 500, 900]),
        record(B, "d4pg", 0, x[:2], [0, 40]),
    ])  # fmt: skip
    write_records(folder / "dmc_proprio-ddpg.json.gz", [
        record(A, "ddpg", 0, x[:2], [0, 100]), record(B, "ddpg", 0, x[:2], [0, 10]),
    ])  # fmt: skip
    write_records(folder / "dmc_proprio-dreamerv3.json.gz", [
        record(A, "dreamerv3", 0, [5000, 20000], [100, 700]), record(B, "dreamerv3", 0, [5000, 20000], [20, 60]),
    ])  # fmt: skip
    write_records(folder / "dmc_proprio-ppo_fixhp.json.gz", [record(A, "ppo_fixhp", 0, x[:2], [10, 30])])
    # Atari in frames (/4): 0, 1e4, 2e4 env steps.
    write_records(folder / "atari100k-dreamerv3.json.gz", [
        record("atari_pong", "dreamerv3", 0, [0, 40000, 80000], [0, 10, 20]),
    ])  # fmt: skip
    (folder.parent / "baselines.yaml").write_text("atari57_gamer:\n  atari_pong: [-20, 20]\n")
    return Published(folder)


def rows(frame, *columns):
    """``{key: value}`` of a table; the key is the first column, or a tuple of all but the last."""
    keys = columns[:-1]
    return {
        (item[keys[0]] if len(keys) == 1 else tuple(item[c] for c in keys)): item[columns[-1]]
        for _, item in frame.iterrows()
    }


def test_suites_yaml_names_every_published_method():
    suite = Suite.load()
    assert comparisons.domain_methods(suite, "dmc_proprio") == {
        "dreamerv3": "DreamerV3", "ppo_fixhp": "PPO", "d4pg": "D4PG", "ddpg": "DDPG", "dmpo": "DMPO", "mpo": "MPO",
    }  # fmt: skip
    assert comparisons.domain_methods(suite, "atari100k") == {"dreamerv3": "DreamerV3", "ppo_fixhp": "PPO"}
    assert comparisons.other_methods(suite)["dmc_vision"] == {"curl": "CURL", "drqv2": "DrQ-v2", "sac": "SAC"}
    assert comparisons.domain_methods(suite, "crafter") == {}  # no published curves


def test_domain_curve_points_are_the_mean_over_tasks_with_a_bootstrap_band(runs_dir, reference):
    suite = Suite.load()
    points = comparisons.domain_curves(
        find_runs(runs_dir, suite), reference, suite, "dmc_proprio", bins=2, reps=4000
    )
    value, low, high = (rows(points, "source", "step", c) for c in ("value", "lo", "hi"))
    # Ours, bin (0, 1e4]: A's seeds 150 and 50 -> 100, B 10 -> (100 + 10) / 2 = 55. A's mean under the
    # bootstrap is 50, 100 or 150 (1/4, 1/2, 1/4) -> the aggregate 30, 55 or 80: 95% interval [30, 80].
    assert value[("DreamerV3 (ours)", 1e4)] == pytest.approx(55.0)
    assert (low[("DreamerV3 (ours)", 1e4)], high[("DreamerV3 (ours)", 1e4)]) == pytest.approx((30.0, 80.0))
    # Bin (1e4, 2e4]: A (400 + 600) / 2 = 500, B 30 -> 265 in [215, 315].
    assert value[("DreamerV3 (ours)", 2e4)] == pytest.approx(265.0)
    assert (low[("DreamerV3 (ours)", 2e4)], high[("DreamerV3 (ours)", 2e4)]) == pytest.approx((215.0, 315.0))
    # D4PG: points at the bins' ends, A (100 + 200) / 2 and B 0 -> 75; then A 400, B 40 -> 220 in [170, 270].
    assert value[("D4PG (published)", 1e4)] == pytest.approx(75.0)
    assert value[("D4PG (published)", 2e4)] == pytest.approx(220.0)
    assert (low[("D4PG (published)", 2e4)], high[("D4PG (published)", 2e4)]) == pytest.approx((170.0, 270.0))
    # DDPG (100 + 10) / 2 = 55 at 2e4; published DreamerV3 (100 + 20) / 2 = 60 and (700 + 60) / 2 = 380.
    assert value[("DDPG (published)", 2e4)] == pytest.approx(55.0)
    assert value[("DreamerV3 (published)", 1e4)] == pytest.approx(60.0)
    assert value[("DreamerV3 (published)", 2e4)] == pytest.approx(380.0)
    # PPO (ours and published) has A only: left out rather than averaged over fewer tasks.
    assert set(points["source"]) == {
        "DreamerV3 (ours)",
        "D4PG (published)",
        "DDPG (published)",
        "DreamerV3 (published)",
    }
    assert set(points["tasks"]) == {2}
    # To the published curves' end (5e5): bins (0, 2.5e5] and (2.5e5, 5e5]. D4PG's first: A's seeds
    # (100 + 300) / 2 and (200 + 500) / 2 -> 275, B (0 + 40) / 2 = 20 -> 147.5. Its second has no
    # point: B's curve ends at 2e4, so that bin would average A alone.
    wide = comparisons.domain_curves(
        find_runs(runs_dir, suite), reference, suite, "dmc_proprio", bins=2, reps=10, x_range="published"
    )
    d4pg = wide[wide["source"] == "D4PG (published)"]
    assert list(d4pg["step"]) == [2.5e5] and d4pg["value"].iloc[0] == pytest.approx(147.5)


def test_final_bars_read_every_published_method_at_our_final_step(runs_dir, reference):
    suite = Suite.load()
    final = final_scores(find_runs(runs_dir, suite))
    bars = comparisons.final_bars(final, reference, suite, "dmc_proprio", reps=4000)
    value, tasks = rows(bars, "source", "value"), rows(bars, "source", "tasks")
    # Ours: A (500 + 600) / 2 = 550, B 30 -> 290 in [265, 315]; PPO 7 on A.
    assert value["DreamerV3 (ours)"] == pytest.approx(290.0) and tasks["DreamerV3 (ours)"] == 2
    ours = bars.set_index("source").loc["DreamerV3 (ours)"]
    assert (ours["lo"], ours["hi"]) == pytest.approx((265.0, 315.0))
    assert value["PPO (ours)"] == pytest.approx(7.0) and tasks["PPO (ours)"] == 1
    # Published at 2e4 env steps (window (18000, 20000]): D4PG A (300 + 500) / 2, B 40 -> 220;
    # DDPG (100 + 10) / 2 = 55; DreamerV3 (700 + 60) / 2 = 380; PPO 30 on A.
    assert value["D4PG (published)"] == pytest.approx(220.0)
    assert value["DDPG (published)"] == pytest.approx(55.0)
    assert value["DreamerV3 (published)"] == pytest.approx(380.0)
    assert value["PPO (published)"] == pytest.approx(30.0)
    assert set(bars["step"]) == {20000.0}
    # DMPO and MPO have no file in the reference folder: no bar.
    assert not {"DMPO (published)", "MPO (published)"} & set(bars["source"])
    # Atari100k, human-normalised: ours (9 + 20) / 40 = 0.725, published 20 at 2e4 -> 1.0.
    atari = rows(comparisons.final_bars(final, reference, suite, "atari100k", reps=10), "source", "value")
    assert atari == pytest.approx({"DreamerV3 (ours)": 0.725, "DreamerV3 (published)": 1.0})
    # The figure names the published methods it has no bar for.
    assert comparisons.absent_methods(bars, suite, "dmc_proprio") == ["DMPO", "MPO"]
    atari_bars = comparisons.final_bars(final, reference, suite, "atari100k", reps=10)
    assert comparisons.absent_methods(atari_bars, suite, "atari100k") == ["PPO"]


def test_cross_domain_panels_pick_the_best_other_method(runs_dir, reference):
    suite = Suite.load()
    final = final_scores(find_runs(runs_dir, suite))
    bars = pd.concat(
        [comparisons.final_bars(final, reference, suite, d, reps=10) for d in ("dmc_proprio", "atari100k")]
    )
    summary = comparisons.cross_domain(bars, suite)
    dmc = summary[summary["domain"] == "dmc_proprio"]
    assert list(dmc["role"]) == [
        "DreamerV3 (ours)", "DreamerV3 (published)", "best other published", "PPO (ours)", "PPO (published)",
    ]  # fmt: skip
    assert list(dmc["value"]) == pytest.approx([290.0, 380.0, 220.0, 7.0, 30.0])
    assert dmc.set_index("role").loc["best other published", "label"] == "D4PG"  # 220 beats DDPG's 55
    atari = summary[summary["domain"] == "atari100k"]
    assert list(atari["role"]) == ["DreamerV3 (ours)", "DreamerV3 (published)"]  # no other method published


def test_report_writes_each_figure_as_png_and_pdf(runs_dir, reference, tmp_path):
    out = tmp_path / "report"
    report = build_report(runs_dir, out, Suite.load(), reference, bins=2, reps=20)
    from PIL import Image

    for stem in (
        "domain_curve_dmc_proprio",
        "final_bars_dmc_proprio",
        "final_bars_atari100k",
        "cross_domain",
    ):
        png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-", stem
        with Image.open(png) as image:
            assert round(image.info["dpi"][0]) == figures.PRINT_DPI == 300 and image.width >= 4 * 300, stem
        assert f"figures/{stem}.png" in report["figures"] and f"figures/{stem}.pdf" in report["figures"]
    assert (out / "figures" / "curves_dmc_proprio.pdf").read_bytes()[:5] == b"%PDF-"
    page = (out / "index.html").read_text()
    assert 'src="figures/cross_domain.png"' in page and 'href="figures/domain_curve_dmc_proprio.pdf"' in page
    # The figures' data, as drawn.
    bars = pd.read_csv(out / "tables" / "final_bars.csv")
    assert rows(bars[bars["domain"] == "dmc_proprio"], "source", "value")[
        "D4PG (published)"
    ] == pytest.approx(220)
    assert len(pd.read_csv(out / "tables" / "cross_domain.csv")) == 7 and len(
        pd.read_csv(out / "tables" / "domain_curves.csv")
    )


def test_all_methods_flag_adds_the_other_published_methods_to_the_task_curves(runs_dir, reference, tmp_path):
    suite = Suite.load()
    runs = find_runs(runs_dir, suite)
    agents = {"dreamerv3": "dreamerv3", "ppo": "ppo_fixhp"}
    plain = binned_curves(runs, reference, suite, agents, bins=2)
    assert set(plain["source"]) == {
        "DreamerV3 (ours)",
        "PPO (ours)",
        "DreamerV3 (published)",
        "PPO (published)",
    }
    every = binned_curves(runs, reference, suite, agents, bins=2, extra=comparisons.other_methods(suite))
    added = every[every["method"] == "D4PG"]
    assert set(every["source"]) - set(plain["source"]) == {"D4PG (published)", "DDPG (published)"}
    # D4PG on A, seed 1, in bins (0, 1e4] and (1e4, 2e4]: its points 200 and 500.
    assert list(added[(added["task"] == A) & (added["seed"] == 1)]["score"]) == [200.0, 500.0]
    out = tmp_path / "r"
    assert make_report.main(["--runs", str(runs_dir), "--out", str(out), "--reps", "10", "--bins", "2",
                             "--reference", str(reference.directory), "--all-methods"]) == 0  # fmt: skip
    assert (out / "figures" / "curves_dmc_proprio.png").exists()
