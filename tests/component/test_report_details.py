"""Report details: the "no finished episodes" note clear of the published curve, whole URLs in the
per-task errors, and the reason next to a missing score. Built from small hand-made run folders.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.transforms import Bbox

from dreamer_tf.harness import figures
from dreamer_tf.harness.report import display_per_task, per_task_table
from dreamer_tf.harness.results import Published, final_scores, find_runs
from dreamer_tf.harness.suite import Suite
from tests.component.test_report import write_run

pytestmark = pytest.mark.backend_independent

A, B = "dmc_cartpole_balance", "dmc_walker_walk"


def test_no_episodes_note_does_not_cover_the_published_curve():
    # A published curve rising from the bottom-left to the top-right corner passes through the
    # middle of the panel, where the note used to be drawn.
    steps = np.linspace(1, 10, 10)
    data = pd.DataFrame({"method": "DreamerV3", "origin": "published", "step": steps, "score": steps})
    data = pd.concat(
        [data, pd.DataFrame({"method": ["DreamerV3"], "origin": ["ours"], "step": [10.0], "score": [np.nan]})]
    )
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    figures._draw_task(ax, data, "dmc_x", {"DreamerV3": "tab:blue"}, "env steps")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (note,) = [t for t in ax.texts if "no finished episodes" in t.get_text()]
    box = note.get_window_extent(renderer)
    (line,) = ax.get_lines()
    path = line.get_transform().transform_path(line.get_path())
    plt.close(fig)
    assert not path.intersects_bbox(Bbox(box.get_points()), filled=False)


def error_with_url():
    url = "https://github.com/danijar/dreamerv3/blob/main/dreamerv3/configs.yaml#L120-L140"
    return "RuntimeError: " + "word " * 28 + f"see {url} for the fix", url


def test_per_task_errors_keep_urls_whole(tmp_path):
    error, url = error_with_url()
    assert error.index(url) < 160 < error.index(url) + len(url)  # today's cut would fall inside the URL
    root = tmp_path / "runs"
    write_run(root, "dmc_proprio", A, "dreamerv3", 0, [], state="failed", error=error)
    suite = Suite.load()
    runs = find_runs(root, suite)
    table = per_task_table(runs, final_scores(runs), Published(None), suite)
    text = table.loc[0, "runs"]
    assert url in text and text.endswith(" …)")  # cut after the URL, not inside it
    assert display_per_task(table, {"dreamerv3": "DreamerV3"}).loc[0, "DreamerV3 (ours)"].count(url) == 1
    # Plain words: cut at the last space before 160 characters.
    from dreamer_tf.harness.report import shorten

    assert shorten("RuntimeError: " + "word " * 40 + "end") == "RuntimeError: " + "word " * 29 + "…"
    assert shorten("x" * 200) == "x" * 200  # one word: kept whole


def test_a_missing_score_says_why(tmp_path):
    root = tmp_path / "runs"
    nan = float("nan")
    write_run(root, "dmc_proprio", A, "dreamerv3", 0, [(10000, nan), (20000, nan)])  # finished, NaN score
    write_run(root, "dmc_proprio", A, "ppo", 0, [], state="failed", error="Traceback\nValueError: boom")
    write_run(root, "dmc_proprio", B, "dreamerv3", 0, [(10000, 1.0), (20000, 2.0)])
    write_run(root, "dmc_proprio", B, "dreamerv3", 1, [(10000, nan), (20000, nan)])
    suite = Suite.load()
    runs = find_runs(root, suite)
    table = per_task_table(runs, final_scores(runs), Published(None), suite)
    shown = display_per_task(table, {"dreamerv3": "DreamerV3", "ppo": "PPO"}).set_index("Task")
    assert shown.loc[A, "DreamerV3 (ours)"] == "– (non-finite score)"
    assert shown.loc[A, "PPO (ours)"] == "– (failed: ValueError: boom)"
    assert shown.loc[B, "DreamerV3 (ours)"] == "2 (1) (1 of 2 non-finite)"
    assert shown.loc[B, "PPO (ours)"] == "– (not run)"
    assert table.set_index("task").loc[B, "dreamerv3_mean"] == 2.0  # the finite seed alone
