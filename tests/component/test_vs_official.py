"""benchmarks/vs_official.py: the order of its processes, their commands, and its table.

The official side needs the official code in its own environment, which CI does not install: here it is
a stand-in Python that prints a fixed measurement, while our side really runs ``throughput.py``.
"""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pytest

from dreamer_tf.harness import vs_official

pytestmark = pytest.mark.backend_independent


def test_repetitions_alternate_the_order_of_the_sides():
    sides = ["tensorflow", "jax", "official"]
    assert vs_official.order(sides, 0) == sides
    assert vs_official.order(sides, 1) == ["official", "jax", "tensorflow"]
    assert vs_official.order(sides, 2) == sides


def test_every_process_is_pinned_to_one_core_and_one_thread(tmp_path):
    args = vs_official.parse_args(
        ["--official", str(tmp_path / "src"), "--venv", str(tmp_path / "venv"), "--core", "1"]
    )
    ours, env = vs_official.command("jax", "dmc_proprio", "size1m", 12, "float32", args)
    assert ours[:3] == ["taskset", "-c", "1"] or not vs_official.shutil.which("taskset")
    assert ours[ours.index("--backend") + 1] == "jax" and env["KERAS_BACKEND"] == "jax"
    assert ours[ours.index("--workload") + 1] == "dmc_proprio" and "--no-flops" in ours
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "1"
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"].split()
    assert all(word.startswith("--") for word in env["XLA_FLAGS"].split())  # XLA stops at one without
    official, env = vs_official.command("official", "dummy", "size12m", 2, "float32", args)
    assert str(tmp_path / "venv" / "bin" / "python") in official
    assert official[official.index("--preset") + 1] == "size12m"
    assert env["PYTHONPATH"] == str((tmp_path / "src").resolve())
    args = vs_official.parse_args(["--official", "x", "--venv", "y", "--whole-machine"])
    line, env = vs_official.command("tensorflow", "dummy", "size1m", 12, "float32", args)
    assert line[0] != "taskset" and "XLA_FLAGS" not in vs_official.thread_env(True)


def test_a_warm_cache_reaches_both_jax_sides_and_a_cold_run_neither(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "from-the-shell"))
    args = vs_official.parse_args(["--official", "x", "--venv", "y", "--cache", "warm"])
    ours, env = vs_official.command("jax", "dmc_proprio", "size1m", 12, "float32", args, "/c/jax")
    assert ours[ours.index("--compile.cache") + 1] == "/c/jax" and "JAX_COMPILATION_CACHE_DIR" not in env
    official, env = vs_official.command("official", "dmc_proprio", "size1m", 12, "float32", args, "/c/off")
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/c/off" and "--compile.cache" not in official
    for side in ("jax", "official", "tensorflow"):
        line, env = vs_official.command(side, "dmc_proprio", "size1m", 12, "float32", args)
        assert "--compile.cache" not in line and "JAX_COMPILATION_CACHE_DIR" not in env, side


def test_the_table_gives_medians_and_the_ratio_to_the_official():
    def result(side, rate, cpu_rate, startup, rss, rep):
        return {"workload": "dummy", "preset": "size1m", "side": side, "rep": rep, "updates_per_s": rate,
                "updates_per_cpu_s": cpu_rate, "startup_s": startup, "peak_rss_mb": rss}  # fmt: skip

    results = [
        result("tensorflow", 0.30, 0.25, 80.0, 2048.0, 0),
        result("official", 0.10, 0.10, 95.0, 1024.0, 0),
        result("official", 0.12, 0.08, 105.0, 1536.0, 1),
        result("tensorflow", 0.20, 0.35, 90.0, 1024.0, 1),
        {"workload": "dummy", "preset": "size1m", "side": "jax", "rep": 0, "error": "exit 1: boom"},
    ]
    rows = {row["side"]: row for row in vs_official.summarise(results)}
    assert rows["tensorflow"]["updates_per_s"] == pytest.approx(0.25)  # median of 0.30 and 0.20
    assert rows["official"]["updates_per_cpu_s"] == pytest.approx(0.09)
    assert rows["tensorflow"]["updates_per_s_ratio"] == pytest.approx(0.25 / 0.11)
    assert rows["tensorflow"]["updates_per_cpu_s_ratio"] == pytest.approx(0.30 / 0.09)
    assert rows["tensorflow"]["peak_rss_mb"] == 2048.0 and rows["tensorflow"]["startup_s"] == 85.0
    assert rows["jax"]["reps"] == 0 and "boom" in rows["jax"]["error"]
    table = vs_official.markdown(list(rows.values()), cpu_rate=True)
    assert (
        "| `dummy`, `size1m` | ours, TensorFlow | 0.25 (0.3, 0.2) | 0.3 (0.25, 0.35) | 85 (80, 90) s | 2.00 GB | 2.27×, 3.33× |"
        in table
    )
    assert "ours, JAX | failed: exit 1: boom" in table


def test_a_missing_checkout_or_environment_is_one_line_with_exit_2(tmp_path, capsys):
    assert vs_official.main(["--official", str(tmp_path), "--venv", str(tmp_path)]) == 2
    assert "not a checkout of danijar/dreamerv3" in capsys.readouterr().err
    (tmp_path / "dreamerv3").mkdir()
    (tmp_path / "dreamerv3" / "agent.py").write_text("")
    assert vs_official.main(["--official", str(tmp_path), "--venv", str(tmp_path / "none")]) == 2
    assert "benchmarks/parity.py setup" in capsys.readouterr().err


def test_a_measurement_of_ours_and_a_stand_in_official(tmp_path, capsys):
    """Ours really trains (debug preset, dmc_proprio spaces); the official side prints a fixed line."""
    checkout = tmp_path / "dreamerv3"
    (checkout / "dreamerv3").mkdir(parents=True)
    (checkout / "dreamerv3" / "agent.py").write_text("")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    line = {
        "updates_per_s": 2.0,
        "updates_per_cpu_s": 1.0,
        "startup_s": 9.0,
        "peak_rss_mb": 512.0,
        "jax": "0.4.33",
    }
    python.write_text(f"#!/bin/sh\necho '{json.dumps(line)}'\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out.json"
    argv = ["--official", str(checkout), "--venv", str(tmp_path / "venv"), "--workloads", "dmc_proprio:debug",
            "--sides", "tensorflow", "official", "--reps", "1", "--updates", "2", "--json", str(out)]  # fmt: skip
    assert vs_official.main(argv) == 0, capsys.readouterr().err
    record = json.loads(Path(out).read_text())
    ours = next(r for r in record["results"] if r["side"] == "tensorflow")
    assert ours["workload"] == "dmc_proprio" and ours["updates_timed"] == 2 and ours["updates_per_cpu_s"] > 0
    assert 0 < ours["startup_s"] < ours["process_wall_s"]
    row = next(r for r in record["rows"] if r["side"] == "tensorflow")
    assert row["updates_per_s_ratio"] == pytest.approx(ours["updates_per_s"] / 2.0)
    assert (
        "| `dmc_proprio`, `debug` | official (JAX 0.4.33) | 2 | 1 | 9 s | 0.50 GB | 1 |"
        in capsys.readouterr().out
    )


def test_a_warm_run_fills_one_cache_per_jax_side_first_and_removes_it_after(tmp_path, monkeypatch, capsys):
    checkout = tmp_path / "dreamerv3"
    (checkout / "dreamerv3").mkdir(parents=True)
    (checkout / "dreamerv3" / "agent.py").write_text("")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").write_text("")
    calls = []

    def measure(line, env, timeout):
        cache = line[line.index("--compile.cache") + 1] if "--compile.cache" in line else None
        calls.append((line[line.index("--updates") + 1], cache or env.get("JAX_COMPILATION_CACHE_DIR")))
        result = {"updates_per_s": 1.0, "updates_per_cpu_s": 1.0, "startup_s": 5.0, "peak_rss_mb": 100.0}
        return {**result, "compile_cache_hits": 0} if cache else result  # ours, as if the cache missed

    monkeypatch.setattr(vs_official, "measure", measure)
    argv = ["--official", str(checkout), "--venv", str(tmp_path / "venv"), "--workloads", "dmc_proprio:size1m",
            "--sides", "tensorflow", "jax", "official", "--reps", "1", "--cache", "warm"]  # fmt: skip
    assert vs_official.main(argv) == 0
    fills, measured = calls[:2], calls[2:]
    assert [updates for updates, _ in fills] == ["1", "1"]
    jax_cache, official_cache = (cache for _, cache in fills)
    assert jax_cache != official_cache and Path(jax_cache).parent == Path(official_cache).parent
    assert measured == [("12", None), ("12", jax_cache), ("12", official_cache)]
    assert not Path(jax_cache).parent.exists()
    out, err = capsys.readouterr()
    assert "Compilation cache warm" in out
    # Ours' one measured process is told it missed; the official side does not report hits.
    assert err.count("the cache did not serve it") == 1


def load_official_side():
    spec = importlib.util.spec_from_file_location("official_throughput", vs_official.OFFICIAL_SIDE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_official_side_passes_positional_jit_options_by_name_on_a_later_jax(monkeypatch):
    # The official code calls jax.jit(fn, in_shardings, out_shardings, static_argnums, None, donate)
    # as JAX 0.4 allowed; this JAX takes those by keyword only.
    import jax
    import numpy as np

    side = load_official_side()
    with pytest.raises(TypeError):
        jax.jit(lambda x: x, None)
    monkeypatch.setattr(jax, "jit", jax.jit)  # restored after the test
    assert side.jit_by_position(jax)

    def repeat(x, times):
        for _ in range(times):  # a Python loop: needs ``times`` static
            x = x * 2.0
        return x

    step = jax.jit(repeat, None, None, (1,), None, (0,))
    assert float(step(np.float32(1.5), 3)) == 12.0
    (args, _) = step.lower(np.float32(1.5), 3).args_info
    assert args[0].donated

    def old_jit(fun, in_shardings=None, out_shardings=None, static_argnums=None):
        return fun

    monkeypatch.setattr(jax, "jit", old_jit)
    assert not side.jit_by_position(jax) and jax.jit is old_jit  # a JAX that takes them: left alone


def test_the_official_environment_has_its_pinned_jax_or_the_one_named():
    from dreamer_tf.harness import parity

    pinned = parity.official_requirements()
    assert "jax[cpu]==0.4.33" in pinned and "numpy<2" in pinned
    later = parity.official_requirements("0.10.2")
    assert "jax==0.10.2" in later and "numpy" in later
    assert not {"jax[cpu]==0.4.33", "numpy<2"} & set(later)
    assert sorted(set(pinned) - {"jax[cpu]==0.4.33", "numpy<2"}) == sorted(
        set(later) - {"jax==0.10.2", "numpy"}
    )


def test_an_official_environment_that_cannot_be_installed_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys
):
    from dreamer_tf.harness import parity

    with pytest.raises(SystemExit) as exit_:
        parity.main(["setup", "--venv", str(tmp_path / "venv"), "--jax", "latest"])
    assert exit_.value.code == 2 and "expected a JAX release such as 0.10.2" in capsys.readouterr().err
    calls = []

    def run(command, **kwargs):  # the venv is made; pip fails, as for a release that does not exist
        calls.append(command)
        return parity.subprocess.CompletedProcess(command, 0 if command[1:3] == ["-m", "venv"] else 1)

    monkeypatch.setattr(parity.subprocess, "run", run)
    assert parity.main(["setup", "--venv", str(tmp_path / "venv"), "--jax", "9.9.9"]) == 2
    assert "jax==9.9.9" in calls[-1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pip could not install") and "jax==9.9.9" in err[0]
