"""Where the time of one update goes: ``python benchmarks/throughput.py --profile DIR``.

On JAX the update is traced with ``jax.profiler`` while XLA reports every operation it runs
(``--xla_cpu_enable_xprof_traceme``) and dumps the optimised program, whose metadata names the
model's layers (``jvp(val)/mlp/dense0``: the critic's first layer; ``transpose(...)``: its backward
pass). On TensorFlow, its profiler records every kernel of the graph by the operation's name
(``val_1/mlp_1/dense0_1/...``; ``gradient_tape/...``: the backward pass), and the executor's own
time per operation is a row of its own. Each operation's own time (its time minus that of the
operations it ran) is summed per layer, and per loop: an operation that runs H times per update sits
in a loop of H steps, such as the imagination (``imag_length``) or the observation of the replayed
sequences (``batch_length`` plus the replay context).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

PROFILE_FLAGS = "--xla_cpu_enable_xprof_traceme=true --xla_dump_hlo_as_text --xla_dump_to={dump}"


def xla_flags(out: Path) -> str:
    """The XLA flags a profiled process needs, set before JAX is imported."""
    return PROFILE_FLAGS.format(dump=out / "hlo")


def own_times(trace_file: Path) -> tuple[collections.Counter, collections.Counter]:
    """Per XLA operation name: its own time in microseconds and how often it ran, from a trace."""
    with gzip.open(trace_file) as file:
        trace = json.load(file)
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in trace["traceEvents"]
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    events = [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == "X"
        and "XLA" in threads.get((e["pid"], e["tid"]), "")
        and not e["name"].startswith("ThunkExecutor")
    ]
    return _own_times([(e["tid"], e["ts"], e["dur"], e["name"]) for e in events])


def op_names(hlo_file: Path) -> dict[str, str]:
    """Instruction name -> the ``op_name`` metadata (the traced function's name scope) in an HLO dump."""
    names = {}
    pattern = re.compile(r'\s*(?:ROOT )?%([\w.-]+) = .*?op_name="([^"]*)"')
    for line in hlo_file.read_text().splitlines():
        match = pattern.match(line)
        if match:
            names[match.group(1)] = re.sub(r"^jit\([^)]*\)/", "", match.group(2))
    return names


def layer_of(op_name: str) -> str:
    """``transpose(jvp(val))/mlp/dense0/...`` -> ``val, backward``; loops' own ops by their scope."""
    backward = op_name.startswith("transpose(")
    match = re.search(r"jvp\((?:jit\()?(\w*)", op_name)
    name = match.group(1) if match else ""
    if not name:  # the step's own code: name it by its first layer scope inside, if any
        parts = [p for p in op_name.split("/")[1:] if p not in ("while", "body", "closed_call", "cond")]
        name = parts[0] if len(parts) > 1 else "other"  # the last part is the operation itself
    return f"{name}, backward" if backward else name


def _own_times(events) -> tuple[collections.Counter, collections.Counter]:
    """Own time and runs per name of ``(thread, start, duration, name)`` events, nested by time."""
    own, runs = collections.Counter(), collections.Counter()
    stack: list[tuple] = []
    for thread, start, duration, name in sorted(events, key=lambda e: (e[0], e[1], -e[2])):
        end = start + duration
        while stack and not (thread == stack[-1][0] and stack[-1][1] <= start and end <= stack[-1][2]):
            stack.pop()
        if stack:  # a loop or call: its own time excludes what it ran
            own[stack[-1][3]] -= duration
        own[name] += duration
        runs[name] += 1
        stack.append((thread, start, end + 0.01, name))
    return own, runs


def tensorflow_own_times(xplane_file: Path) -> tuple[collections.Counter, collections.Counter]:
    """Per TensorFlow operation (``name:type``): its own time in microseconds and how often it ran,
    from the profiler's ``.xplane.pb``; the executor's own spans (``ExecutorState::Process``) count
    as one operation. An operation in a loop's body counts as many runs as the loop's most frequent
    operation (:func:`tensorflow_loop_of`)."""
    from dreamer_tf import backend

    own, runs = _own_times(backend.tensorflow_profile_events(xplane_file))
    loop_of = {op: tensorflow_loop_of(op) for op in runs}
    loop_runs: collections.Counter = collections.Counter()
    for op, count in runs.items():
        loop_runs[loop_of[op]] = max(loop_runs[loop_of[op]], count)
    return own, collections.Counter(
        {op: loop_runs[loop_of[op]] if loop_of[op] else n for op, n in runs.items()}
    )


def tensorflow_layer_of(op: str) -> str:
    """``gradient_tape/while/while_grad/body/_490/.../while/dyngru_1/MatMul:BatchMatMulV2`` ->
    ``dyngru, backward``: the first name scope that is not a loop's, without Keras' ``_1`` suffix."""
    name = op.split(":")[0]
    if "/" not in name:
        return "executor" if name.startswith("Executor") else "other"
    skip = re.compile(r"^(while(_\d+)?|body|_\d+|while_grad|gradient_tape|gradients|cond(_\d+)?)$")
    parts = [p for p in name.split("/") if not skip.match(p)]
    layer = re.sub(r"_\d+$", "", parts[0]) if len(parts) > 1 else "other"
    return f"{layer}, backward" if name.startswith("gradient_tape/") else layer


def tensorflow_loop_of(op: str) -> str | None:
    """The loop whose body an operation is in (``while_1/body/_395/...`` -> ``while_1``), or None.

    The profiler leaves out some runs of the shortest operations, so on TensorFlow every operation
    of a loop is counted as running as often as the loop's most frequent operation."""
    match = re.match(r"(.*)/body/_\d+/", op)
    return match.group(1) if match else None


def breakdown(out: Path, updates: int, loops: dict[int, str] | None = None) -> dict:
    """Milliseconds per update by loop and by layer, from the trace (and on JAX the program dump)
    under ``out``; ``loops`` names loops by their steps per update."""
    loops = loops or {}
    xplanes = sorted(out.glob("trace/plugins/profile/*/*.xplane.pb"))
    traces = sorted(out.glob("trace/plugins/profile/*/*.trace.json.gz"))
    dumps = sorted((out / "hlo").glob("*train_step*after_optimizations.txt"))
    if traces and dumps:
        own, runs = own_times(traces[-1])
        names = op_names(dumps[-1])
        layer = lambda op: layer_of(names.get(op, "other"))  # noqa: E731
    elif xplanes and not dumps:
        own, runs = tensorflow_own_times(xplanes[-1])
        layer = tensorflow_layer_of
    else:
        raise RuntimeError(f"no trace of the train step (and on JAX no HLO dump) under {out}")
    total = sum(own.values()) / 1e3 / updates
    by_loop: collections.Counter = collections.Counter()
    by_layer: collections.Counter = collections.Counter()
    for op, micros in own.items():
        ms = micros / 1e3 / updates
        repeats = runs[op] // updates
        where = "outside loops" if repeats <= 1 else f"a loop of {repeats} steps"
        if op.startswith("Executor"):  # TensorFlow's executor, between every two operations
            where = "the executor"
        by_loop[f"{where}: {loops[repeats]}" if repeats in loops else where] += ms
        by_layer[layer(op)] += ms
    share = lambda counter: [  # noqa: E731
        {"part": k, "ms": round(v, 1), "share": round(v / total, 3)}
        for k, v in counter.most_common()
        if v >= 0.05
    ]
    return {"ms_per_update": round(total, 1), "by_loop": share(by_loop), "by_layer": share(by_layer)}


def format_breakdown(result: dict, top: int = 20) -> str:
    lines = [f"{result['ms_per_update']} ms of operations per update"]
    for key, title in (("by_loop", "by loop"), ("by_layer", "by layer (name scope)")):
        lines.append(f"  {title}:")
        for row in result[key][:top]:
            lines.append(f"    {row['ms']:8.1f} ms  {100 * row['share']:5.1f}%  {row['part']}")
    return "\n".join(lines)
