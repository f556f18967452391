"""Settings of the C allocator (glibc's malloc) for a training process.

XLA on the CPU allocates the temporary buffer of a compiled step (hundreds of MB) on every call
and frees it when the call returns. glibc serves an allocation that large with a fresh ``mmap``
and unmaps it on ``free``, so each update touches its buffer's pages anew: at size1m on
``dmc_proprio`` about 95,000 page faults per update, a fifth of a JAX update's CPU time spent
in the kernel zeroing pages. :func:`keep_freed_memory` makes glibc serve every allocation from
one heap and keep what is freed, so the next update reuses the same, already mapped pages.
:func:`release_free_memory` hands freed pages back once, after the step is compiled: XLA's
compiler frees about a gigabyte that would otherwise stay resident.

Kept memory is not always reused. XLA asks for its buffers 64-byte aligned, and glibc 2.36 (Debian
12) serves an aligned request only from a free chunk with room to spare for the alignment, while a
freed buffer is exactly its own size; when the allocations around it are still live, the next
update's buffer goes elsewhere, and updates alternate between two resident copies of it. Where the
buffer is larger than :data:`KEEP_LIMIT` (images), the runner calls :func:`map_large_buffers` once
the step is compiled, and glibc maps and unmaps large allocations again as by default: on ``dummy``
at size1m a sixth slower per update, a gigabyte less at its peak (docs/performance.md).

Elsewhere than Linux with glibc (macOS, musl) all three are no-ops.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_done = False

# A step's temporary buffer above which the process has large allocations mapped afresh each time.
KEEP_LIMIT = 512 << 20


def _glibc():
    """The process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Serve every allocation from one arena without ``mmap`` and never shrink it on ``free``.

    Call it at the start of a process, before its threads allocate: a thread that already has an
    arena of its own keeps it. Returns whether the settings took (False off glibc).

    The cost is memory where a step has many large buffers (images): the heap keeps every page any
    of them touched, where unmapped buffers only count while they live (docs/performance.md).
    """
    global _done
    libc = _glibc()
    if libc is None:
        return False
    if not _done:
        # One arena: a thread arena is at most 64 MB, so a larger buffer allocated from a worker
        # thread would be mapped afresh whatever the other settings say.
        ok = libc.mallopt(_M_ARENA_MAX, 1) == 1
        ok &= libc.mallopt(_M_MMAP_MAX, 0) == 1
        # glibc takes the threshold as a size_t: -1 is the largest, so the heap's top is never
        # returned by free() itself (release_free_memory() still does it when asked).
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
        _done = bool(ok)
    return _done


def map_large_buffers() -> bool:
    """Map every allocation of 32 MB or more with its own ``mmap`` again, unmapped on ``free``.

    Undoes the part of :func:`keep_freed_memory` that keeps large buffers; smaller allocations
    still come from the one arena. Returns whether the settings took (False off glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    # 32 MB is the largest threshold glibc accepts on 64-bit systems; setting it also stops glibc
    # from raising the threshold itself as buffers are freed.
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    return bool(ok & (libc.mallopt(_M_MMAP_MAX, 65536) == 1))


def release_free_memory() -> None:
    """Return the heap's free pages to the system (``malloc_trim(0)``), for after compiling."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
