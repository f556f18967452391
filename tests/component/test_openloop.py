"""The DreamerV3 agent's open-loop report: shapes and ranges, the context part against the posterior's
reconstruction, imagination after it, the vector plot, and a report that leaves training untouched."""

from __future__ import annotations

import numpy as np

from tests.component.test_agent import make_agent, make_batch


def test_image_report_shapes_context_and_imagination():
    # Replay context 1 (the debug preset's): the report starts from the stored latent, as training does.
    replay_context = 1
    agent = make_agent("image", "--replay_context", str(replay_context), "--batch_length", "10")
    batch = make_batch(agent)
    batch["is_first"][:] = False  # one episode per sequence: imagination must not cross a reset
    batch["is_first"][:, 0] = True
    agent.train(batch)
    metrics, media = agent.report(batch, sequences=3, context=5)
    video = media["openloop/image"]
    assert video.shape == (3, 10, 64, 3 * 64, 3) and video.dtype == np.uint8, video.shape
    C = replay_context
    assert np.array_equal(video[:, :, :, :64], batch["image"][:3, C:])

    # The model column: the posterior's decoding for the context steps, the prior's after them.
    data = {k: np.asarray(v)[:3] for k, v in agent.train_inputs(batch).items()}
    rssm = agent.model.wm.rssm
    rng = np.random.default_rng(0)
    noise = {
        "post": rng.gumbel(size=(3, 10, rssm.stoch, rssm.classes)).astype(np.float32),
        "prior": rng.gumbel(size=(3, 5, rssm.stoch, rssm.classes)).astype(np.float32),
    }
    out = agent.runner.call(agent._report_fns[5], data, noise)
    assert out["open/image"].shape == (3, 10, 64, 64, 3)
    assert 0.0 <= out["open/image"].min() and out["open/image"].max() <= 1.0
    np.testing.assert_allclose(out["open/image"][:, :5], out["post/image"][:, :5], atol=1e-6)
    np.testing.assert_allclose(out["open/reward"][:, :5], out["post/reward"][:, :5], atol=1e-6)
    assert np.abs(out["open/image"][:, 5:] - out["post/image"][:, 5:]).max() > 1e-4
    assert set(metrics) == {
        f"openloop/{name}_{part}"
        for name in ("image_mse", "reward_mae", "cont_mae")
        for part in ("context", "imagined")
    }
    assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_report_reconstruction_matches_decoding_the_posterior():
    agent = make_agent("image", "--batch_length", "8", "--replay_context", "0")
    batch = make_batch(agent)
    data = {k: np.asarray(v)[:2] for k, v in agent.train_inputs(batch).items()}
    rssm, wm = agent.model.wm.rssm, agent.model.wm
    rng = np.random.default_rng(1)
    noise = {
        "post": rng.gumbel(size=(2, 8, rssm.stoch, rssm.classes)).astype(np.float32),
        "prior": rng.gumbel(size=(2, 3, rssm.stoch, rssm.classes)).astype(np.float32),
    }
    agent.report(batch, sequences=2, context=5)
    out = agent.runner.call(agent._report_fns[5], data, noise)
    # The same posterior by hand, step by step with obs_step, then the decoder.
    agent.runner.sync()
    deter, stoch, prev = agent.model.initial_carry(2)
    frames = []
    for t in range(8):
        tokens = wm.encoder({"image": data["image"][:, t]})
        deter, stoch, _ = rssm.obs_step(
            deter, stoch, prev, tokens, data["is_first"][:, t], noise["post"][:, t]
        )
        feat = wm.feat(deter, stoch)
        frames.append(np.asarray(wm.decoder(feat[:, : rssm.deter], feat[:, rssm.deter :])["image"].pred()))
        prev = np.eye(3, dtype=np.float32)[data["action"][:, t]]
    np.testing.assert_allclose(out["post/image"], np.stack(frames, 1), atol=1e-4)


def test_vector_report_plots_reward_and_continuation():
    agent = make_agent("vector")
    batch = make_batch(agent)
    metrics, media = agent.report(batch, sequences=4)
    assert list(media) == ["openloop/reward_cont"]
    plot = media["openloop/reward_cont"]
    assert plot.dtype == np.uint8 and plot.ndim == 3 and plot.shape[2] == 3
    assert plot.shape[0] == 8 * 110, plot.shape  # two panels (reward, continue) per sequence
    assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 3  # lines and text, not a blank canvas
    assert "openloop/reward_mae_imagined" in metrics


def test_report_leaves_training_unchanged():
    first, second = make_agent("vector"), make_agent("vector")
    batch = make_batch(first)
    first.report(batch)
    metrics_a, _ = first.train(batch)
    metrics_b, _ = second.train(batch)
    assert metrics_a["opt/loss"] == metrics_b["opt/loss"]
