"""Where the time of one update goes, on JAX: ``python benchmarks/throughput.py --profile DIR``.

The update is traced with ``jax.profiler`` while XLA reports every operation it runs
(``--xla_cpu_enable_xprof_traceme``) and dumps the optimised program, whose metadata names the
model's layers (``jvp(val)/mlp/dense0``: the critic's first layer; ``transpose(...)``: its backward
pass). Each operation's own time (its time minus that of the operations it ran) is summed per layer,
and per loop: an operation that runs H times per update sits in a loop of H steps, such as the
imagination (``imag_length``) or the observation of the replayed sequences (``batch_length`` plus
the replay context).
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
    events.sort(key=lambda e: (e["tid"], e["ts"], -e["dur"]))
    own, runs = collections.Counter(), collections.Counter()
    stack: list[dict] = []
    for event in events:
        end = event["ts"] + event["dur"]
        while stack and not (
            event["tid"] == stack[-1]["tid"] and stack[-1]["ts"] <= event["ts"] and end <= stack[-1]["end"]
        ):
            stack.pop()
        if stack:  # a loop or call: its own time excludes what it ran
            own[stack[-1]["name"]] -= event["dur"]
        own[event["name"]] += event["dur"]
        runs[event["name"]] += 1
        stack.append({**event, "end": end + 0.01})
    return own, runs


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


def breakdown(out: Path, updates: int, loops: dict[int, str] | None = None) -> dict:
    """Milliseconds per update by loop and by layer, from the trace and dump under ``out``;
    ``loops`` names loops by their steps per update."""
    loops = loops or {}
    traces = sorted(out.glob("trace/plugins/profile/*/*.trace.json.gz"))
    dumps = sorted((out / "hlo").glob("*train_step*after_optimizations.txt"))
    if not traces or not dumps:
        raise RuntimeError(f"no trace or no HLO dump of the train step under {out}")
    own, runs = own_times(traces[-1])
    names = op_names(dumps[-1])
    total = sum(own.values()) / 1e3 / updates
    by_loop: collections.Counter = collections.Counter()
    by_layer: collections.Counter = collections.Counter()
    for op, micros in own.items():
        ms = micros / 1e3 / updates
        repeats = runs[op] // updates
        where = "outside loops" if repeats <= 1 else f"a loop of {repeats} steps"
        by_loop[f"{where}: {loops[repeats]}" if repeats in loops else where] += ms
        by_layer[layer_of(names.get(op, "other"))] += ms
    share = lambda counter: [  # noqa: E731
        {"part": k, "ms": round(v, 1), "share": round(v / total, 3)}
        for k, v in counter.most_common()
        if v >= 0.05
    ]
    return {"ms_per_update": round(total, 1), "by_loop": share(by_loop), "by_layer": share(by_layer)}


def format_breakdown(result: dict, top: int = 20) -> str:
    lines = [f"{result['ms_per_update']} ms of XLA operations per update"]
    for key, title in (("by_loop", "by loop"), ("by_layer", "by layer (name scope)")):
        lines.append(f"  {title}:")
        for row in result[key][:top]:
            lines.append(f"    {row['ms']:8.1f} ms  {100 * row['share']:5.1f}%  {row['part']}")
    return "\n".join(lines)
