"""Environments that misbehave on purpose, for the fault tests (tests/faults/).

    env = HangEnv(hang_after=5, marker="/tmp/hung")   # step 6 writes the marker and never returns

Every class is self-contained and picklable through ``functools.partial`` (subprocess workers need
that). ``python -m tests.helpers.faulty_envs hang AFTER MARKER -- <dreamer_tf flags>`` runs the
training CLI with environment 0 replaced by a ``HangEnv``: the way to hang a real run.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.envs.dummy import Dummy


class HangEnv:
    """``dummy_disc`` without the image whose ``step`` hangs for good after ``hang_after`` steps.

    Before it hangs it writes ``marker`` (when given: the step number and the process id), so a test
    knows the run is stuck in ``step`` and in which process.
    It sleeps in Python, the way a blocked socket read or a stuck simulator loop looks from outside.
    """

    def __init__(self, hang_after: int | None = None, marker: str | None = None) -> None:
        self._env = Dummy("disc", size=(8, 8), length=10, image=False)
        self._hang_after = hang_after
        self._marker = marker
        self._steps = 0

    @property
    def obs_space(self) -> dict[str, Any]:
        return self._env.obs_space

    @property
    def act_space(self) -> dict[str, Any]:
        return self._env.act_space

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        self._steps += 1
        if self._hang_after is not None and self._steps > self._hang_after:
            if self._marker:
                partial = Path(f"{self._marker}.{os.getpid()}.tmp")
                partial.write_text(f"{self._steps} {os.getpid()}")
                os.replace(partial, self._marker)  # whole or absent: a reader never sees it half written
            while True:
                time.sleep(3600)
        return self._env.step(action)

    def close(self) -> None:
        self._env.close()


def _hang_main(argv: list[str]) -> int:
    """``hang AFTER MARKER -- <flags>``: the dreamer_tf CLI with environment 0 a ``HangEnv``."""
    from dreamer_tf.envs.parallel import BatchEnv
    from dreamer_tf.run import train

    after, marker, separator, *flags = argv
    assert separator == "--", "usage: hang AFTER MARKER -- <dreamer_tf flags>"

    def make_envs(config: Any, mode: str = "train") -> BatchEnv:
        count = config.run.envs if mode == "train" else config.run.eval_envs
        fns = [functools.partial(HangEnv, int(after) if i == 0 else None, marker) for i in range(count)]
        parallel = config.run.parallel
        if parallel == "auto":
            parallel = "process" if count > 1 else "none"
        return BatchEnv(fns, parallel=parallel, timeout=config.run.episode_timeout)

    train.make_envs = make_envs
    return train.main(flags)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    sys.exit({"hang": _hang_main}[command](rest))
