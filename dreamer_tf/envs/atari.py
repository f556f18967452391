"""Atari 2600 through ale-py, with the paper's preprocessing.

Both Atari domains use this adapter; their defaults live in ``config.env.atari``
(Atari 57: 96x96 gray, sticky actions, all 18 actions) and ``config.env.atari100k``
(Atari 100k: 64x64 colour, no sticky actions, the game's minimal action set).
Each agent step repeats the action for ``repeat`` emulator frames, the image is the
pixel-wise maximum over the last ``pooling`` frames, resized with Pillow (bilinear),
and optionally converted to luminance. Each episode starts with a uniform number of
0..``noops`` no-op frames.

    env = make("pong", config)              # task name without the "atari_" prefix
    obs = env.step({"reset": True, "action": 0})
"""

from __future__ import annotations

import collections
import difflib
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import require, standardize
from dreamer_tf.spaces import Space

INSTALL = "pip install ale-py==0.12.1   (ale-py ships the ROMs since 0.9)"

# The 18 actions of the full ALE action set, in ALE's order.
ACTION_MEANINGS = (
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
    "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE",
    "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
)  # fmt: skip

# ITU-R 601 luma weights: an equal average would map e.g. pure red and pure green to the same gray.
LUMA = np.array([0.299, 0.587, 1.0 - 0.299 - 0.587])

# Names in the published data that differ from ale-py's ROM ids.
ROM_ALIASES = {"james_bond": "jamesbond"}


class Atari(Env):
    """One ALE game. ``sticky`` sets ALE's repeat_action_probability to 0.25 (Machado et al. 2018).

    ``lives``: ``unused`` ignores life loss; ``discount`` marks a life loss terminal
    without ending the episode; ``reset`` ends the episode on a life loss.
    ``length`` caps an episode in emulator frames (108,000 = 30 minutes), a truncation.
    """

    LOCK = threading.Lock()  # ALE's ROM loading and reset are not thread safe.

    def __init__(
        self,
        game: str,
        repeat: int = 4,
        size: tuple[int, int] = (84, 84),
        gray: bool = True,
        noops: int = 0,
        lives: str = "unused",
        sticky: bool = True,
        actions: str = "all",
        length: int = 108000,
        pooling: int = 2,
        resize: str = "pillow",
        clip_reward: bool = False,
        seed: int | None = None,
    ) -> None:
        assert lives in ("unused", "discount", "reset"), lives
        assert actions in ("all", "needed"), actions
        assert pooling >= 1 and repeat >= 1, (pooling, repeat)
        if resize != "pillow":
            raise ValueError(f"env.atari.resize must be 'pillow', got {resize!r}")
        ale_py = require("ale_py", "ale-py", INSTALL)
        game = ROM_ALIASES.get(game, game)
        self.repeat = repeat
        self.size = tuple(int(x) for x in size)
        self.gray = gray
        self.noops = noops
        self.lives = lives
        self.length = length
        self.clip_reward = clip_reward
        self.rng = np.random.default_rng(seed)
        with self.LOCK:
            self.ale = ale_py.ALEInterface()
            self.ale.setLoggerMode(ale_py.LoggerMode.Error)
            self.ale.setInt("random_seed", int(self.rng.integers(0, 2**31)))
            self.ale.setFloat("repeat_action_probability", 0.25 if sticky else 0.0)
            self.ale.loadROM(_rom_path(ale_py, game))
        legal = self.ale.getLegalActionSet() if actions == "all" else self.ale.getMinimalActionSet()
        self.actionset = list(legal)
        self.noop = ale_py.Action.NOOP
        height, width = self.ale.getScreenDims()
        # The last `pooling` emulator frames, newest first.
        self.frames = collections.deque(
            [np.zeros((height, width, 3), np.uint8) for _ in range(pooling)], maxlen=pooling
        )
        self.prevlives = 0
        self.duration = 0
        self.done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        return {"image": Space(np.uint8, (*self.size, 1 if self.gray else 3)), **standard_obs_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, len(self.actionset))}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self.done:
            self._reset()
            return self._obs(0.0, is_first=True)
        index = int(action["action"])
        assert 0 <= index < len(self.actionset), f"action {index} outside 0..{len(self.actionset) - 1}"
        ale_action = self.actionset[index]
        reward, terminal, last = 0.0, False, False
        for _ in range(self.repeat):
            reward += self.ale.act(ale_action)
            self.duration += 1
            # Every frame goes through the buffer, so the pool is always over the frames that
            # were emulated last, also when the episode ends in the middle of a repeat.
            self._grab()
            if self.ale.game_over():
                terminal = last = True
            if self.length and self.duration >= self.length:
                last = True
            lives = self.ale.lives()
            if self.lives in ("discount", "reset") and 0 < lives < self.prevlives:
                terminal = True
                last = last or self.lives == "reset"
            self.prevlives = lives
            if terminal or last:
                break
        self.done = last
        return self._obs(reward, is_last=last, is_terminal=terminal)

    def _reset(self) -> None:
        with self.LOCK:
            self.ale.reset_game()
        for _ in range(int(self.rng.integers(self.noops + 1))):
            self.ale.act(self.noop)
            if self.ale.game_over():
                with self.LOCK:
                    self.ale.reset_game()
        # Fill every pooling slot with the current screen: frames from the previous episode must
        # not leak into the first observation (the bug fixed in the official code at e3f0224).
        self._grab()
        for frame in list(self.frames)[1:]:
            np.copyto(frame, self.frames[0])
        self.prevlives = self.ale.lives()
        self.duration = 0
        self.done = False

    def _grab(self) -> None:
        self.frames.rotate(1)
        self.ale.getScreenRGB(self.frames[0])

    def _obs(
        self, reward: float, is_first: bool = False, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, np.ndarray]:
        if self.clip_reward:
            reward = float(np.sign(reward))
        return {
            "image": preprocess(np.max(np.stack(self.frames), 0), self.size, self.gray),
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(is_terminal),
        }

    def close(self) -> None:
        self.ale = None


def preprocess(frame: np.ndarray, size: tuple[int, int], gray: bool) -> np.ndarray:
    """Resize an RGB frame to ``size`` (H, W) with Pillow's bilinear filter, then optionally to luma."""
    image = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))
    if gray:
        image = (image @ LUMA).astype(np.uint8)[:, :, None]
    return image


def _rom_path(ale_py: Any, game: str) -> str:
    directory = os.environ.get("ALE_ROM_PATH")
    if directory:
        return os.path.join(directory, f"{game}.bin")
    roms = require("ale_py.roms", "ale-py", INSTALL)
    path = roms.get_rom_path(game)
    if path is None:
        raise ValueError(f"ale-py has no ROM named '{game}'. Known: {', '.join(roms.get_all_rom_ids())}")
    return str(path)


def check(game: str) -> None:
    """Raise ``ValueError`` if ALE has no ROM for ``game`` (``dreamer_tf.envs.check_task``).

    Without ale-py there is nothing to check against; making the environment says what to install.
    """
    game = ROM_ALIASES.get(game, game)
    directory = os.environ.get("ALE_ROM_PATH")
    if directory:
        if not os.path.isfile(os.path.join(directory, f"{game}.bin")):
            raise ValueError(f"ALE_ROM_PATH={directory} has no {game}.bin.")
        return
    roms = require("ale_py.roms", "ale-py", INSTALL)
    known = roms.get_all_rom_ids()
    if game not in known:
        close = difflib.get_close_matches(game, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"ale-py has no ROM named '{game}'.{hint} List the games: python -m dreamer_tf.envs --domain atari"
        )


def _settings(config: Any, domain: str) -> dict[str, Any]:
    settings = dict(config.env[domain])
    settings["size"] = tuple(settings["size"])
    return settings


def make(task: str, config: Any) -> Env:
    """``atari_<game>``: the Atari 57 setting (``config.env.atari``)."""
    return standardize(Atari(task, **_settings(config, "atari")))


def make_100k(task: str, config: Any) -> Env:
    """``atari100k_<game>``: the Atari 100k setting (``config.env.atari100k``)."""
    return standardize(Atari(task, **_settings(config, "atari100k")))
