"""Transparent huge pages for a training process's large buffers (Linux with glibc 2.35 or newer).

A compiled train step takes its working memory afresh for every update (on the CPU, XLA's temporary
buffer of a ``size1m`` update is about 370 MB), and the kernel maps that memory on first touch, 4 KB
at a time: about 95,000 page faults per update, a fifth of the update's CPU time spent in the kernel.
glibc's tunable ``glibc.malloc.hugetlb=1`` marks its large allocations for transparent huge pages
(2 MB each), where the kernel hands them out only on request (the common ``madvise`` setting):
a few hundred faults instead. Tunables are read when a process starts, so the command-line entry
points call ``enable()`` first, which starts the same command once more with the tunable set.

``DREAMER_TF_HUGEPAGES=0`` turns this off; the re-started process carries ``DREAMER_TF_HUGEPAGES=1``.
Standard library only: this runs before anything heavy is imported.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "DREAMER_TF_HUGEPAGES"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MIN_GLIBC = (2, 35)  # the first glibc with the hugetlb tunable


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def thp_mode(setting: Path = THP_SETTING) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), or None."""
    try:
        match = re.search(r"\[(\w+)\]", setting.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def needed(environ: dict | None = None, glibc: tuple | None = None, mode: str | None = None) -> bool:
    """Whether starting again with the tunable would give this process huge pages it lacks now."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH) in ("0", "1"):  # turned off, or this is the re-started process
        return False
    if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
        return False  # the user chose a value
    # "always": the kernel already backs large mappings with huge pages; "never": nothing to gain.
    return glibc is not None and glibc >= MIN_GLIBC and mode == "madvise"


def enable() -> None:
    """Start this command again with the tunable set, where that helps; otherwise return.

    Call it first in a command-line entry point, never from library code: the process is replaced
    (same pid, same arguments, same environment plus the tunable).
    """
    if not sys.platform.startswith("linux") or not needed(None, glibc_version(), thp_mode()):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    env[SWITCH] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # could not start again: run on without huge pages
