"""glibc's allocator settings for JAX training processes (dreamer_tf.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dreamer_tf import allocator, backend

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the settings exist on Linux with glibc only")

# Allocates and frees 256 MB the way XLA's CPU runtime does with a step's buffer, printing the
# process's resident MB before, after freeing and after release_free_memory() (argv: keep or not).
SCRIPT = """
import ctypes, sys
from dreamer_tf import allocator

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024

if sys.argv[1] in ("keep", "keep-then-map"):
    print("took", allocator.keep_freed_memory())
if sys.argv[1] == "keep-then-map":
    print("mapped", allocator.map_large_buffers())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
before = rss()
block = libc.malloc(size)
ctypes.memset(block, 1, size)
libc.free(block)
freed = rss()
allocator.release_free_memory()
print("mb", before, freed, rss())
"""


def run(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout
    return out, [int(x) for x in out.split("mb")[1].split()]


@glibc
def test_freed_memory_is_kept_for_reuse_and_released_when_asked():
    out, (before, freed, released) = run("keep")
    assert "took True" in out
    assert freed - before > 200, (before, freed)  # kept mapped: the next buffer faults nothing
    assert released - before < 50, (before, released)


@glibc
def test_once_large_buffers_are_mapped_again_a_large_block_is_unmapped_on_free():
    out, (before, freed, _) = run("keep-then-map")
    assert "took True" in out and "mapped True" in out
    assert freed - before < 50, (before, freed)


@glibc
def test_without_the_settings_a_large_block_is_unmapped_on_free():
    _, (before, freed, _) = run("default")
    assert freed - before < 50, (before, freed)


def test_only_jax_processes_change_the_allocator_and_use_a_compilation_cache(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(backend, "use_compilation_cache", lambda directory: calls.append(directory))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    for name, expected in (("tensorflow", []), ("jax", ["keep", "/tmp/programs"])):
        monkeypatch.setattr(backend, "backend", lambda name=name: name)
        calls.clear()
        backend.prepare_process("/tmp/programs")
        assert calls == expected, name
    calls.clear()
    backend.prepare_process()
    assert calls == ["keep", None]


def test_the_train_command_sets_the_allocator_before_it_starts_the_backend(tmp_path, monkeypatch):
    # describe() asks JAX for its devices, which starts its threads; a thread that has allocated
    # keeps its own arena, so the settings must come first.
    from dreamer_tf.config import load_config
    from dreamer_tf.run import loop, train

    calls = []
    monkeypatch.setattr(backend, "prepare_process", lambda cache: calls.append(("prepare", cache)))
    monkeypatch.setattr(train, "describe", lambda config: calls.append("describe") or "")
    monkeypatch.setattr(loop, "train", lambda *args: calls.append("train") or "done")
    monkeypatch.setitem(sys.modules, "keras", sys.modules.get("keras") or object())
    config = load_config(
        ["debug"], ["--task", "dummy_disc", "--logdir", str(tmp_path), "--compile.cache", "none"]
    )
    assert train._train(config, tmp_path, object, resuming=False) == 0
    assert calls == [("prepare", "none"), "describe", "train"]


def test_compile_cache_names_a_directory_or_none(monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    home = os.path.expanduser("~")
    assert backend.compilation_cache_dir("auto") == f"{home}/.cache/dreamer_tf/jax"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/srv/jax-programs")
    assert backend.compilation_cache_dir("auto") == "/srv/jax-programs"
    assert backend.compilation_cache_dir("~/programs") == f"{home}/programs"
    assert backend.compilation_cache_dir("none") is None and backend.compilation_cache_dir("") is None


def test_a_cache_directory_that_cannot_be_made_is_one_warning(tmp_path, capsys):
    import jax

    before = jax.config.jax_enable_compilation_cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    try:
        assert backend.use_compilation_cache(str(blocker / "programs")) is None
        assert jax.config.jax_enable_compilation_cache is False
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling without a cache" in err, err
