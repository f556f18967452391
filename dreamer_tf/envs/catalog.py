"""Every benchmark task by domain, and whether a domain can run on this machine.

Task names follow the published DreamerV3 data (``<domain>_<task>``); the lists are
static so that they can be shown without the domain's package. ``domain_status`` imports
the package to tell whether the domain is runnable, and why not.

    tasks("atari100k")[:2]        # ['atari100k_alien', 'atari100k_amidar']
    domain_status("dmlab")        # (False, "deepmind_lab is not installed: build DeepMind Lab ...")
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil

from dreamer_tf.envs import bsuite as bsuite_env
from dreamer_tf.envs import dmlab as dmlab_env
from dreamer_tf.envs import memory_maze as memory_maze_env
from dreamer_tf.envs import procgen as procgen_env

ATARI57 = (
    "alien", "amidar", "assault", "asterix", "asteroids", "atlantis", "bank_heist", "battle_zone",
    "beam_rider", "berzerk", "bowling", "boxing", "breakout", "centipede", "chopper_command",
    "crazy_climber", "defender", "demon_attack", "double_dunk", "enduro", "fishing_derby", "freeway",
    "frostbite", "gopher", "gravitar", "hero", "ice_hockey", "jamesbond", "kangaroo", "krull",
    "kung_fu_master", "montezuma_revenge", "ms_pacman", "name_this_game", "phoenix", "pitfall", "pong",
    "private_eye", "qbert", "riverraid", "road_runner", "robotank", "seaquest", "skiing", "solaris",
    "space_invaders", "star_gunner", "surround", "tennis", "time_pilot", "tutankham", "up_n_down",
    "venture", "video_pinball", "wizard_of_wor", "yars_revenge", "zaxxon",
)  # fmt: skip

ATARI100K = (
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing", "breakout",
    "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite", "gopher", "hero",
    "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman", "pong", "private_eye", "qbert",
    "road_runner", "seaquest", "up_n_down",
)  # fmt: skip

DMC_PROPRIO = (
    "acrobot_swingup", "ball_in_cup_catch", "cartpole_balance", "cartpole_balance_sparse",
    "cartpole_swingup", "cartpole_swingup_sparse", "cheetah_run", "finger_spin", "finger_turn_easy",
    "finger_turn_hard", "hopper_hop", "hopper_stand", "pendulum_swingup", "reacher_easy", "reacher_hard",
    "walker_run", "walker_stand", "walker_walk",
)  # fmt: skip

DMC_VISION = tuple(sorted((*DMC_PROPRIO, "quadruped_run", "quadruped_walk")))

# Benchmark -> (registry domain, task names without the domain prefix). The two DMC
# benchmarks share the ``dmc`` adapter and differ in config presets only.
BENCHMARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "atari": ("atari", ATARI57),
    "atari100k": ("atari100k", ATARI100K),
    "procgen": ("procgen", procgen_env.GAMES),
    "dmlab": ("dmlab", dmlab_env.LEVELS),
    "dmc_proprio": ("dmc", DMC_PROPRIO),
    "dmc_vision": ("dmc", DMC_VISION),
    "bsuite": ("bsuite", ()),  # filled from bsuite.sweep in tasks()
    "minecraft": ("minecraft", ("diamond",)),
    "crafter": ("crafter", ("reward",)),
    "memory_maze": ("memory_maze", memory_maze_env.SIZES),
}

# Registry domain -> (module to import, package name, how to install it).
REQUIREMENTS: dict[str, tuple[str, str, str]] = {
    "atari": ("ale_py", "ale-py", "pip install ale-py==0.12.1"),
    "atari100k": ("ale_py", "ale-py", "pip install ale-py==0.12.1"),
    "procgen": ("procgen", "procgen-mirror", procgen_env.INSTALL),
    "dmlab": ("deepmind_lab", "deepmind_lab", dmlab_env.INSTALL),
    "dmc": ("dm_control.suite", "dm-control", "pip install dm-control==1.0.50 mujoco==3.17.0"),
    "bsuite": ("bsuite", "bsuite", bsuite_env.INSTALL),
    "minecraft": ("minerl", "minerl", "a Java 8 JDK, then pip install minerl==0.4.4"),
    "crafter": ("crafter", "crafter", "pip install crafter==1.8.3"),
    "memory_maze": ("memory_maze", "memory-maze", memory_maze_env.INSTALL),
    "gym": ("gymnasium", "gymnasium", "pip install gymnasium"),
}


def tasks(benchmark: str) -> list[str]:
    """Full task names (``atari_pong``) of a benchmark or registry domain."""
    if benchmark == "dmc":
        return sorted({f"dmc_{t}" for t in DMC_VISION})
    if benchmark not in BENCHMARKS:
        raise KeyError(f"Unknown benchmark '{benchmark}'. Known: {', '.join(BENCHMARKS)}")
    domain, names = BENCHMARKS[benchmark]
    if benchmark == "bsuite":
        names = tuple(bsuite_env.all_ids())
    return [f"{domain}_{name}" for name in names]


def domain_status(domain: str) -> tuple[bool, str]:
    """Whether ``domain`` (a registry domain or a benchmark name) can run here, and why (not)."""
    domain = BENCHMARKS.get(domain, (domain,))[0]
    if domain not in REQUIREMENTS:
        return True, "built in"
    module, package, install = REQUIREMENTS[domain]
    # Look the package up without importing it: importing MuJoCo's OSMesa renderer into a process that
    # already holds TensorFlow corrupts the heap at interpreter exit, and listing should be cheap anyway.
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as error:
        return False, f"{package} is not usable ({type(error).__name__}: {error}); install: {install}"
    if not found:
        return False, f"{package} is not installed (no module '{module}'); install: {install}"
    if domain == "minecraft" and shutil.which("java") is None:
        return False, f"{package} is installed but no 'java' is on PATH; install: {install}"
    return True, f"{package} is installed"
