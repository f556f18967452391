"""Episode videos: frames under ``log/`` (DMC's ``log_image``) go to videos instead of being averaged into
a scalar, and the recorder keeps environment 0's whole episode, capped in length."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer_tf.run import loop

pytestmark = pytest.mark.backend_independent


def step(t: int, last: bool = False, count: int = 2) -> dict:
    return {
        "reward": np.ones(count, np.float32),
        "is_first": np.full(count, t == 0),
        "is_last": np.full(count, last),
        "is_terminal": np.zeros(count, bool),
        "image": np.full((count, 4, 4, 3), t, np.uint8),
        "log/image": np.full((count, 6, 6, 3), 100 + t, np.uint8),
        "log/bonus": np.full(count, 0.5, np.float32),
    }


def test_log_frames_are_not_reduced_to_scalars():
    episodes = loop._Episodes(2)
    records = [episodes.add(0, step(t, last=t == 2)) for t in range(3)]
    assert records[:2] == [None, None]
    assert not any(key.startswith("log/image") for key in records[2]), records[2]
    assert records[2]["log/bonus/sum"] == 1.5


def test_recorder_keeps_environment_zeros_episode_and_caps_it(monkeypatch):
    recorder = loop._Recorder()
    assert recorder.add(step(0), due=False) is None and recorder.add(step(1, last=True), due=False) is None
    videos = [recorder.add(step(t, last=t == 3), due=True) for t in range(4)]
    assert videos[:3] == [None] * 3
    assert sorted(videos[3]) == ["image", "log/image"]
    assert videos[3]["log/image"].shape == (4, 6, 6, 3)
    assert list(videos[3]["image"][:, 0, 0, 0]) == [0, 1, 2, 3]
    monkeypatch.setattr(loop, "MAX_VIDEO_FRAMES", 2)
    videos = [recorder.add(step(t, last=t == 4), due=True) for t in range(5)]
    assert videos[4]["image"].shape == (2, 4, 4, 3)


def test_dmc_log_image_gives_frames():
    pytest.importorskip("dm_control")
    from dreamer_tf.config import load_config
    from dreamer_tf.envs import make

    config = load_config(["dmc_proprio"]).update({"env.dmc.log_image": True})
    env = make("dmc_reacher_easy", config)
    try:
        steps = [env.step({"reset": t == 0, "action": np.zeros(2, np.float32)}) for t in range(3)]
    finally:
        env.close()
    batches = [{k: np.asarray(v)[None] for k, v in obs.items()} for obs in steps]
    batches[-1]["is_last"] = np.ones(1, bool)  # end the episode here rather than after 1000 rendered steps
    episodes, recorder = loop._Episodes(1), loop._Recorder()
    for obs in batches:
        record, videos = episodes.add(0, obs), recorder.add(obs, due=True)
    assert not any(key.startswith("log/image") for key in record), record
    assert list(videos) == ["log/image"] and videos["log/image"].shape == (3, 64, 64, 3)
    assert videos["log/image"].std() > 0  # a rendered scene, not a blank frame


def test_gymnasium_render_mode_gives_frames_and_the_same_episodes():
    pytest.importorskip("ale_py")
    from dreamer_tf.envs.gym import MAX_FRAME_SIZE, FromGym

    # Pong's RAM as the observation, so that the rendered screen is the only image.
    def run(**kwargs) -> tuple[dict, list[dict]]:
        env = FromGym("ALE/Pong-v5", seed=3, obs_type="ram", frameskip=4, **kwargs)
        try:
            return env.obs_space, [env.step({"reset": t == 0, "action": np.int32(t % 6)}) for t in range(40)]
        finally:
            env.close()

    space, rendered = run(render_mode="rgb_array")
    plain_space, plain = run()
    assert "log/image" not in plain_space and "image" not in space
    assert space["log/image"].shape == (210, 160, 3) and max(space["log/image"].shape) <= MAX_FRAME_SIZE
    frames = np.stack([obs["log/image"] for obs in rendered])
    assert frames.dtype == np.uint8 and frames.shape == (40, 210, 160, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the game moves
    for with_frames, without in zip(rendered, plain, strict=True):
        assert np.array_equal(with_frames["vector"], without["vector"])  # rendering changes no episode


def test_gymnasium_frames_are_subsampled_and_a_missing_renderer_is_named():
    gymnasium = pytest.importorskip("gymnasium")
    from dreamer_tf.envs.gym import FromGym
    from dreamer_tf.envs.wrappers import MissingPackageError

    class Big(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gymnasium.spaces.Discrete(2)
        render_mode = "rgb_array"

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, False, False, {}

        def render(self):
            return np.arange(400 * 600 * 3, dtype=np.int64).reshape(400, 600, 3).astype(np.uint8)

    env = FromGym(Big())
    assert env.obs_space["log/image"].shape == (134, 200, 3)  # every third pixel: 600 / 3 <= 256
    frame = env.step({"reset": True, "action": np.int32(0)})["log/image"]
    assert np.array_equal(frame, Big().render()[::3, ::3])

    class NoRenderer(Big):
        def render(self):
            raise gymnasium.error.DependencyNotInstalled(
                'pygame is not installed, run `pip install "gymnasium[classic-control]"`'
            )

    with pytest.raises(MissingPackageError, match="pip install"):
        FromGym(NoRenderer())
