"""The entry points' start-again with glibc's huge-page tunable (dreamer_tf/run/hugepages.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dreamer_tf.run import hugepages

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    "environ, glibc, mode, expected",
    [
        ({}, (2, 36), "madvise", True),
        ({}, (2, 35), "madvise", True),
        ({}, (2, 34), "madvise", False),  # no hugetlb tunable before 2.35
        ({}, None, "madvise", False),  # not glibc
        ({}, (2, 36), "always", False),  # the kernel gives huge pages already
        ({}, (2, 36), "never", False),
        ({}, (2, 36), None, False),  # no transparent huge pages at all
        ({"DREAMER_TF_HUGEPAGES": "0"}, (2, 36), "madvise", False),  # turned off
        ({"DREAMER_TF_HUGEPAGES": "1"}, (2, 36), "madvise", False),  # already started again
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", False),  # the user's value
        ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, (2, 36), "madvise", True),
    ],
)
def test_needed(environ, glibc, mode, expected):
    assert hugepages.needed(environ, glibc, mode) is expected


def test_thp_mode_reads_the_bracketed_setting(tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(setting) == "madvise"
    setting.write_text("[always] madvise never\n")
    assert hugepages.thp_mode(setting) == "always"
    assert hugepages.thp_mode(tmp_path / "missing") is None


def test_glibc_version(monkeypatch):
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
    assert hugepages.glibc_version() == (2, 36)
    monkeypatch.setattr(os, "confstr", lambda name: "musl 1.2")
    assert hugepages.glibc_version() is None

    def unsupported(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "confstr", unsupported)
    assert hugepages.glibc_version() is None


def fake_machine(monkeypatch, calls: list, fail: bool = False) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hugepages, "thp_mode", lambda: "madvise")

    def execve(path, argv, env):
        calls.append((path, argv, env))
        if fail:
            raise OSError("exec failed")

    monkeypatch.setattr(os, "execve", execve)


def test_enable_starts_the_same_command_again_with_the_tunable_added(monkeypatch):
    calls: list = []
    fake_machine(monkeypatch, calls)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    monkeypatch.delenv("DREAMER_TF_HUGEPAGES", raising=False)
    hugepages.enable()
    [(path, argv, env)] = calls
    assert path == sys.executable
    assert argv == [sys.executable, *sys.orig_argv[1:]]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
    assert env["DREAMER_TF_HUGEPAGES"] == "1"


def test_enable_runs_on_when_the_process_cannot_start_again(monkeypatch):
    calls: list = []
    fake_machine(monkeypatch, calls, fail=True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("DREAMER_TF_HUGEPAGES", raising=False)
    hugepages.enable()  # returns instead of raising
    assert len(calls) == 1 and calls[0][2]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_enable_leaves_a_process_alone_when_turned_off(monkeypatch):
    calls: list = []
    fake_machine(monkeypatch, calls)
    monkeypatch.setenv("DREAMER_TF_HUGEPAGES", "0")
    hugepages.enable()
    assert calls == []


PROBE = (
    "import os; from dreamer_tf.run import hugepages; hugepages.enable(); "
    "print(os.environ.get('GLIBC_TUNABLES', '-'), os.environ.get('DREAMER_TF_HUGEPAGES', '-'), os.getpid())"
)


@pytest.mark.parametrize("switch", [None, "0"])
def test_a_real_process_starts_again_once_where_the_machine_offers_huge_pages(switch):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DREAMER_TF_HUGEPAGES")}
    if switch is not None:
        env["DREAMER_TF_HUGEPAGES"] = switch
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    tunables, marker, _pid = out.stdout.split()
    offered = sys.platform.startswith("linux") and hugepages.needed(
        {}, hugepages.glibc_version(), hugepages.thp_mode()
    )
    if offered and switch is None:
        assert (tunables, marker) == ("glibc.malloc.hugetlb=1", "1")
    else:
        assert (tunables, marker) == ("-", switch or "-")


def test_the_training_command_enables_huge_pages_before_it_parses_anything(monkeypatch):
    from dreamer_tf.run import train

    order: list[str] = []
    monkeypatch.setattr(hugepages, "enable", lambda: order.append("enable"))
    monkeypatch.setattr(train, "main", lambda argv=None: order.append("main") or 0)
    assert train.cli() == 0
    assert order == ["enable", "main"]
