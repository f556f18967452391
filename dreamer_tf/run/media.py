"""Frames to files: animated GIFs (Pillow, always installed) and MP4 (``imageio[ffmpeg]``, optional).

    frames = to_uint8(batch)                 # [T, H, W, C] float in [0, 1] or uint8 -> uint8 RGB
    data = encode_gif(frames, fps=20)        # bytes of an animated GIF
    path = write_video(run / "media" / "eval_policy_000004096.gif", frames)

TensorBoard shows an animated GIF stored as an image summary, which is how videos reach it
without moviepy or ffmpeg.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

MP4_INSTALL = "pip install 'imageio[ffmpeg]'"


def to_uint8(frames: Any) -> np.ndarray:
    """``[T, H, W, C]`` (or ``[H, W, C]``) frames as uint8 RGB; floats are read as ``[0, 1]``.

    One channel is repeated to three; more than three keeps the first three.
    """
    array = np.asarray(frames)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim not in (3, 4):
        raise ValueError(f"Frames must be [T, H, W, C] or [H, W, C], got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 2:
        array = np.concatenate([array, array[..., :1]], axis=-1)
    elif channels > 3:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def encode_gif(frames: Any, fps: float = 20) -> bytes:
    """An animated GIF of ``frames`` (``[T, H, W, C]``), looping forever."""
    from PIL import Image

    array = to_uint8(frames)
    if array.ndim == 3:
        array = array[None]
    images = [Image.fromarray(frame) for frame in array]
    buffer = io.BytesIO()
    duration = max(1, int(round(1000 / max(float(fps), 1e-3))))
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buffer.getvalue()


def encode_png(image: Any) -> bytes:
    """A PNG of one ``[H, W, C]`` image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_video(path: str | Path, frames: Any, fps: float = 20) -> Path:
    """Write ``frames`` to ``path`` (``.gif`` or ``.mp4``), atomically; returns the path.

    MP4 needs ``imageio`` with its ffmpeg plugin and names the install command when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    temporary = path.with_name(path.name + ".tmp")
    if suffix == ".gif":
        temporary.write_bytes(encode_gif(frames, fps))
    elif suffix == ".mp4":
        _write_mp4(temporary, to_uint8(frames), fps)
    else:
        raise ValueError(f"Videos are written as .gif or .mp4, got '{path.name}'.")
    temporary.replace(path)
    return path


def openloop_grid(video: Any, context: int) -> np.ndarray:
    """Stack sequences ``[B, T, H, W, C]`` vertically into one ``[T, B·(H + 4), W + 4, 3]`` video.

    Each sequence gets a 2-pixel border, green while the model observes (the first ``context``
    steps) and red while it imagines, as in the official agent's report.
    """
    video = np.asarray(video)
    B, T = video.shape[:2]
    frames = to_uint8(video.reshape(B * T, *video.shape[2:])).reshape(B, T, *video.shape[2:4], 3)
    border = np.where(np.arange(T)[:, None] < context, [[0, 200, 0]], [[220, 0, 0]]).astype(np.uint8)
    padded = np.broadcast_to(
        border[None, :, None, None, :], (B, T, frames.shape[2] + 4, frames.shape[3] + 4, 3)
    )
    padded = padded.copy()
    padded[:, :, 2:-2, 2:-2] = frames
    return np.ascontiguousarray(padded.transpose(1, 0, 2, 3, 4).reshape(T, -1, padded.shape[3], 3))


def media_name(tag: str, step: int, suffix: str) -> str:
    """``"openloop/image", 4096, ".gif"`` -> ``"openloop_image_000004096.gif"``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") or "media"
    return f"{stem}_{int(step):09d}{suffix}"


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    from dreamer_tf.envs.wrappers import MissingPackageError

    try:
        import imageio.v2 as imageio
    except ImportError as error:
        raise MissingPackageError(
            f"MP4 videos need imageio ({error}). Install it with: {MP4_INSTALL}"
        ) from error
    height, width = frames.shape[1:3]
    # H.264 wants even sizes; pad by one row or column rather than resample.
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    try:
        with imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    except (ImportError, RuntimeError, ValueError) as error:
        if "ffmpeg" in str(error).lower():
            raise MissingPackageError(
                f"MP4 videos need imageio's ffmpeg plugin ({error}). Install it with: {MP4_INSTALL}"
            ) from error
        raise
