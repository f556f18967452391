"""The profile breakdown: own times from a trace, layers from XLA's op names, sums per loop and layer."""

from __future__ import annotations

import gzip
import json

import pytest

from dreamer_tf.harness import profile

pytestmark = pytest.mark.backend_independent


def write_trace(path, events):
    meta = [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "tf_XLAEigen/1"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 8, "args": {"name": "python"}},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as file:
        json.dump({"traceEvents": meta + events}, file)


def event(name, ts, dur, tid=7):  # ts and dur in ms here, in us in the trace
    return {"ph": "X", "pid": 1, "tid": tid, "name": name, "ts": 1000 * ts, "dur": 1000 * dur}


HLO = """
ENTRY %main {
  %while.5 = (s32[]) while(%tuple), condition=%cond, body=%body, metadata={op_name="jit(_train_step)/jvp()/while"}
  %dot.1 = f32[8,64]{1,0} dot(%a, %b), metadata={op_name="jit(_train_step)/jvp()/while/body/closed_call/dyngru/dot_general"}
  %fusion.2 = f32[64,255]{1,0} fusion(%c), kind=kLoop, metadata={op_name="jit(_train_step)/transpose(jvp(val))/logits/transpose"}
  %add.3 = f32[] add(%d, %e), metadata={op_name="jit(_train_step)/jvp()/add"}
}
"""


def test_breakdown_sums_own_times_per_loop_and_layer(tmp_path):
    # Two updates: a loop (100 ms) running its body op 3 times (20 ms each), a critic backward op
    # (50 ms) and a bare add (10 ms); a python-thread event and the executor's own span are ignored.
    events = []
    for start in (0, 1000):
        events.append(event("ThunkExecutor::Execute", start, 900))
        events.append(event("while.5", start, 100))
        events += [event("dot.1", start + 10 + 25 * i, 20) for i in range(3)]
        events.append(event("fusion.2", start + 200, 50))
        events.append(event("add.3", start + 300, 10))
        events.append(event("dot.1", start + 400, 999, tid=8))
    write_trace(tmp_path / "trace/plugins/profile/run/host.trace.json.gz", events)
    (tmp_path / "hlo").mkdir()
    (tmp_path / "hlo/module_1.jit__train_step.cpu_after_optimizations.txt").write_text(HLO)

    result = profile.breakdown(tmp_path, updates=2, loops={3: "imagination"})

    assert result["ms_per_update"] == pytest.approx(160)  # 100 (40 loop + 60 body) + 50 + 10
    loops = {row["part"]: row["ms"] for row in result["by_loop"]}
    assert loops == {"outside loops": 100, "a loop of 3 steps: imagination": 60}
    layers = {row["part"]: row["ms"] for row in result["by_layer"]}
    assert layers == {
        "dyngru": 60,
        "val, backward": 50,
        "other": 50,  # the loop's own 40 and the add's 10
    }
    assert "imagination" in profile.format_breakdown(result)


@pytest.mark.parametrize(
    "op_name, layer",
    [
        ("transpose(jvp(pol_action))/mlp/dense0/linear/transpose", "pol_action, backward"),
        ("jvp(jit(_uniform))/add", "_uniform"),
        ("jvp()/while/body/closed_call/dynhid0/dot_general", "dynhid0"),
        ("jvp()/reduce_sum", "other"),
        ("laprop/div", "other"),
    ],
)
def test_layer_names_come_from_the_op_name_scopes(op_name, layer):
    assert profile.layer_of(op_name) == layer


def test_a_missing_trace_is_named(tmp_path):
    with pytest.raises(RuntimeError, match="no trace of the train step"):
        profile.breakdown(tmp_path, updates=1)


def write_xplane(path, events):
    """A TensorFlow profiler file: ``events`` as (thread line, start ms, duration ms, op name)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    lines, ids = {}, {}
    for line_name, start, duration, name in events:
        if line_name not in lines:
            lines[line_name] = plane.lines.add(id=len(lines), name=line_name)
        if name not in ids:
            ids[name] = len(ids) + 1
            plane.event_metadata[ids[name]].name = name
        lines[line_name].events.add(
            metadata_id=ids[name], offset_ps=int(start * 1e9), duration_ps=int(duration * 1e9)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(space.SerializeToString())


def test_breakdown_of_a_tensorflow_trace(tmp_path):
    # Two updates: an imagination loop (100 ms) running its GRU matmul 3 times (20 ms each), the
    # critic's backward matmul (50 ms), the executor's own span (5 ms) and a python-thread event.
    body = "while_1/body/_390/while_1/dyngru_1/MatMul:_MklBatchMatMulV2"
    events = []
    for start in (0, 1000):
        compute = "tf_Compute/123"
        events.append((compute, start, 100, "while_1:While"))
        events += [(compute, start + 10 + 25 * i, 20, body) for i in range(3)]
        # A short operation of the same loop whose third run the profiler left out.
        events += [(compute, start + 31 + 25 * i, 1, "while_1/body/_390/while_1/Tanh:Tanh") for i in range(2)]
        events.append(
            (compute, start + 200, 50, "gradient_tape/val_1/mlp_1/dense0_1/MatMul/MatMul:_MklMatMul")
        )
        events.append((compute, start + 300, 5, "ExecutorState::Process"))
        events.append(("python", start + 400, 999, body))
    write_xplane(tmp_path / "trace/plugins/profile/run/host.xplane.pb", events)

    result = profile.breakdown(tmp_path, updates=2, loops={3: "imagination"})

    assert result["ms_per_update"] == pytest.approx(155)  # 100 (38 loop + 62 body) + 50 + 5
    loops = {row["part"]: row["ms"] for row in result["by_loop"]}
    assert loops == {"outside loops": 88, "a loop of 3 steps: imagination": 62, "the executor": 5}
    layers = {row["part"]: row["ms"] for row in result["by_layer"]}
    assert layers == {"dyngru": 60, "val, backward": 50, "other": 40, "executor": 5}


@pytest.mark.parametrize(
    "op, layer",
    [
        ("while_1/body/_390/while_1/dynhid0_1/MatMul:_MklBatchMatMulV2", "dynhid0"),
        (
            "gradient_tape/while/while_grad/body/_490/gradient_tape/while/gradients/while/dyngru_1/"
            "split_grad/concat:ConcatV2",
            "dyngru, backward",
        ),
        ("pol_action_3/mlp_1/dense0_1/linear_1/Tensordot/MatMul:_MklMatMul", "pol_action"),
        ("mul_71:Mul", "other"),
        ("ExecutorState::Process", "executor"),
    ],
)
def test_tensorflow_layer_names_come_from_the_op_names(op, layer):
    assert profile.tensorflow_layer_of(op) == layer


def test_profile_wants_a_new_or_empty_folder(tmp_path, capsys):
    from dreamer_tf.harness import throughput

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "trace").mkdir()  # a former profile: its dump would be read again
    (tmp_path / "file").write_text("")
    for folder in ("old", "file"):
        with pytest.raises(SystemExit) as exit_info:
            throughput.parse_args(["--backend", "jax", "--profile", str(tmp_path / folder)])
        assert exit_info.value.code == 2
        assert "give a new or empty folder" in capsys.readouterr().err
    args = throughput.parse_args(["--backend", "jax", "--profile", str(tmp_path / "new" / "p")])
    assert args.profile.is_dir()
