"""Open-loop reports and episode videos from DreamerV3 training runs: files in ``media/`` of the expected
frame counts and sizes, and the report's scalars in ``metrics.jsonl``. Runs both Keras backends."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dreamer_tf.run.metrics import read_jsonl
from dreamer_tf.run.train import main


def frames(path) -> list[np.ndarray]:
    with Image.open(path) as image:
        out = []
        for index in range(image.n_frames):
            image.seek(index)
            out.append(np.asarray(image.convert("RGB")))
        return out


def train(logdir, *flags: str) -> None:
    argv = ["--task", "dummy_disc", "--configs", "debug", "--logdir", str(logdir), "--run.progress", "false"]
    argv += ["--run.steps", "60", "--env.dummy.length", "12", "--run.log_every", "1000", *flags]
    assert main(argv) == 0


def test_image_task_leaves_openloop_and_episode_videos(tmp_path):
    train(tmp_path, "--run.report_every", "1000", "--run.video_every", "40", "--run.eval_every", "1000")
    media = tmp_path / "media"
    openloop = sorted(media.glob("openloop_image_*.gif"))
    # report_every 1000 s: only the report at the end of the run.
    assert [p.name for p in openloop] == ["openloop_image_000000060.gif"], sorted(media.iterdir())
    video = frames(openloop[0])
    # batch_length 8 frames; 4 sequences (batch_size 4) of 64+4 pixels stacked; true | model | error + border.
    assert len(video) == 8 and video[0].shape == (4 * 68, 3 * 64 + 4, 3), (len(video), video[0].shape)
    assert np.array_equal(video[0][0, 0], [0, 200, 0]) and np.array_equal(video[-1][0, 0], [220, 0, 0])
    # Environment 0's episodes have 13 observations (12 steps and the reset); two environments, so the
    # first ends at env step 26; the next one due starts after step 66 > 60: exactly one training video.
    train_videos = sorted(media.glob("episode_train_image_*.gif"))
    assert [p.name for p in train_videos] == ["episode_train_image_000000026.gif"]
    assert [f.shape for f in frames(train_videos[0])] == [(64, 64, 3)] * 13
    # Evaluation at step 0 and at the end, each recording its first episode of environment 0.
    eval_videos = sorted(media.glob("episode_eval_image_*.gif"))
    assert [p.name for p in eval_videos] == [
        "episode_eval_image_000000000.gif",
        "episode_eval_image_000000060.gif",
    ]
    assert len(frames(eval_videos[0])) == 13
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "openloop/image_mse_imagined" in r]
    assert len(rows) == 1 and rows[0]["step"] == 60 and 0 <= rows[0]["openloop/image_mse_imagined"] <= 1


def test_vector_task_leaves_the_reward_plot(tmp_path):
    train(tmp_path, "--env.dummy.image", "false", "--run.report_every", "1000", "--run.video_every", "40")
    names = sorted(p.name for p in (tmp_path / "media").iterdir())
    # No image key: a plot instead of videos, and no episode videos.
    assert names == ["openloop_reward_cont_000000060.png"], names
    with Image.open(tmp_path / "media" / names[0]) as image:
        assert image.size == (360, 4 * 2 * 110)
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "openloop/reward_mae_imagined" in r]
    assert len(rows) == 1
