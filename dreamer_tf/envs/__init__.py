"""Environment registry: ``make(task, config)`` for every domain.

Task names are ``<domain>_<task>`` as in the published DreamerV3 data, for
example ``atari_pong``, ``dmc_walker_walk``, ``bsuite_catch/0``,
``crafter_reward``. Each domain module is imported only when used, so a
missing optional package only matters for its own domain.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from dreamer_tf.envs.base import Env

# domain -> (module, factory). The factory is called as factory(task, config) where ``task`` is
# the part after "<domain>_" and returns an Env.
DOMAINS: dict[str, tuple[str, str]] = {
    "dummy": ("dreamer_tf.envs.dummy", "make"),
    "gym": ("dreamer_tf.envs.gym", "make"),
    "atari": ("dreamer_tf.envs.atari", "make"),
    "atari100k": ("dreamer_tf.envs.atari", "make_100k"),
    "procgen": ("dreamer_tf.envs.procgen", "make"),
    "dmc": ("dreamer_tf.envs.dmc", "make"),
    "dmlab": ("dreamer_tf.envs.dmlab", "make"),
    "bsuite": ("dreamer_tf.envs.bsuite", "make"),
    "minecraft": ("dreamer_tf.envs.minecraft", "make"),
    "crafter": ("dreamer_tf.envs.crafter", "make"),
    "memory_maze": ("dreamer_tf.envs.memory_maze", "make"),
}


class UnknownTaskError(ValueError):
    pass


def split_task(task: str) -> tuple[str, str]:
    """``"dmc_walker_walk"`` -> ``("dmc", "walker_walk")``; the longest known domain prefix wins."""
    for domain in sorted(DOMAINS, key=len, reverse=True):
        if task == domain or task.startswith(domain + "_"):
            return domain, task[len(domain) + 1 :]
    close = difflib.get_close_matches(task.split("_")[0], list(DOMAINS), n=3, cutoff=0.3)
    hint = f" Did you mean the domain {', '.join(close)}?" if close else ""
    raise UnknownTaskError(
        f"Unknown task '{task}': tasks are named <domain>_<task>.{hint} "
        f"Domains: {', '.join(sorted(DOMAINS))}. List all tasks with: python -m dreamer_tf.envs --list"
    )


def check_task(task: str) -> None:
    """Raise ``UnknownTaskError`` if ``task`` names no task of its domain, without creating anything.

    A domain module may define ``check(name)``, which raises ``ValueError`` for a name it does not
    know; it must be cheap (no simulator started, no worker). Domains without one, and domains whose
    package is missing, are checked when the environment is made.
    """
    from dreamer_tf.envs.wrappers import MissingPackageError

    domain, name = split_task(task)
    check = getattr(importlib.import_module(DOMAINS[domain][0]), "check", None)
    if check is None:
        return
    try:
        check(name)
    except MissingPackageError:
        return
    except ValueError as error:
        raise UnknownTaskError(f"Unknown task '{task}': {error}") from None


def make(task: str, config: Any) -> Env:
    """Create the environment for ``task`` using the ``config.env.<domain>`` settings."""
    domain, name = split_task(task)
    module, factory = DOMAINS[domain]
    return getattr(importlib.import_module(module), factory)(name, config)
