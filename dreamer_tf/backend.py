"""Compiled train and policy steps: the only module that touches TensorFlow or JAX directly.

    runner = make_runner(model, optimizer, jit=True, xla=False)
    metrics, replay_updates = runner.train(batch)          # numpy in, floats / numpy out
    actions, carry, extra = runner.policy(obs, carry)

TensorFlow: ``tf.function`` (optionally ``jit_compile``) around a
``GradientTape`` step; variables are updated in place.
JAX: ``jax.jit`` over a stateless step: the variable values live in the runner
as arrays and flow through ``keras.StatelessScope``; ``sync()`` writes them
back into the Keras variables (for saving or inspection).

Both runners skip an update whose loss or gradient is not finite: the weights, the optimizer
state and the model's other state (normalisers, slow critic) stay as they were, and the metric
``opt/skipped`` is 1.0 (0.0 for an applied update). The training loop counts such updates.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from dreamer_tf import allocator
from dreamer_tf.config import ConfigError
from dreamer_tf.nn import ops as dops


def backend() -> str:
    return keras.backend.backend()


def prepare_process(cache: str = "none") -> str | None:
    """Process-wide settings for training on this backend; call before the agent is built.

    On JAX, glibc keeps freed memory for reuse (:func:`dreamer_tf.allocator.keep_freed_memory`):
    XLA's CPU runtime allocates each step's temporary buffer afresh. It has to happen before JAX
    starts its threads, which is why it is not done when a runner is made. TensorFlow's runtime
    measured no faster with it, so its processes keep glibc's defaults.

    ``cache`` is ``compile.cache``: where JAX keeps compiled steps between processes
    (:func:`compilation_cache_dir`). TensorFlow has no such cache; it ignores the setting.
    Returns the cache directory in use (None: none).
    """
    if backend() != "jax":
        return None
    allocator.keep_freed_memory()
    return use_compilation_cache(compilation_cache_dir(cache))


DEFAULT_COMPILATION_CACHE = "~/.cache/dreamer_tf/jax"


def compilation_cache_dir(setting: str) -> str | None:
    """The directory ``compile.cache`` names, or None for no cache.

    ``auto`` is ``$JAX_COMPILATION_CACHE_DIR`` where it is set, else ``~/.cache/dreamer_tf/jax``;
    ``none`` (or an empty string) turns the cache off; anything else is a directory.
    """
    setting = str(setting).strip()
    if setting.lower() in ("", "none"):
        return None
    if setting.lower() == "auto":
        setting = os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_COMPILATION_CACHE
    return str(Path(setting).expanduser())


def use_compilation_cache(directory: str | None) -> str | None:
    """Have JAX load compiled programs from ``directory`` and store new ones there (None: neither).

    A later process that compiles the same step (a resumed run, another seed, the same benchmark)
    loads it instead: on the CPU at size1m a few seconds instead of about twenty, and without the
    compiler's gigabyte on top of the process (docs/performance.md). JAX keys every entry by the
    program, the compiler options and its own version, so a changed model never loads a stale one.
    A directory that cannot be made is reported on one line and the process compiles as usual.
    Returns the directory in use (None: none).
    """
    import jax

    if directory is not None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"warning: compile.cache {directory}: {error.strerror or error}; compiling without a cache",
                  file=sys.stderr)  # fmt: skip
            directory = None
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def compilation_cache_hits() -> list[str] | None:
    """A list that grows by one for each program JAX loads from its compilation cache (None off JAX)."""
    if backend() != "jax":
        return None
    import jax

    hits: list[str] = []

    def listen(event: str, **kwargs: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    return hits


def window_max_and_positions(windows, positions, axes: tuple[int, ...]):
    """JAX: the maximum of ``windows`` over ``axes``, and the bitwise OR of ``positions`` (integer
    bits, broadcast against ``windows``) at the places that hold it, in one reduction.

    One reduction, so that XLA cannot compute the positions later, in the backward pass, from the
    input it would then have to keep until there (``nets.max_pool2``).
    """
    from jax import lax

    def combine(a, b):
        (a_max, a_bits), (b_max, b_bits) = a, b
        top = lax.max(a_max, b_max)
        zero = lax.full_like(a_bits, 0)
        return top, lax.bitwise_or(
            lax.select(a_max == top, a_bits, zero), lax.select(b_max == top, b_bits, zero)
        )

    positions = np.asarray(positions)
    bits = lax.broadcast_in_dim(positions, windows.shape, range(windows.ndim))
    lowest = np.array(-np.inf, windows.dtype)
    return lax.reduce((windows, bits), (lowest, positions.dtype.type(0)), combine, axes)


def release_build_memory() -> None:
    """Free what building an agent leaves behind; a training process calls it once its agent is built.

    On JAX every initializer and every other operation run while building is a small compiled
    program of its own, and JAX keeps them all (about 130 MB at size1m, a quarter of the process
    before its step is compiled, which then adds to its peak). None of them runs again: the steps
    are compiled whole. TensorFlow keeps no such programs.
    """
    if backend() == "jax":
        import jax

        jax.clear_caches()
        allocator.release_free_memory()


def set_seed(seed: int) -> None:
    """Seed Python's and NumPy's global generators and Keras' global seed, and TensorFlow's on its backend.

    ``keras.utils.set_random_seed`` seeds TensorFlow whenever it is installed, importing it: on the
    JAX backend that costs a process that never runs TensorFlow about 10 s and 600 MB of memory.
    """
    if backend() != "tensorflow":
        try:
            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator
            from keras.src.utils import rng_utils

            global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
            # Keras makes its global SeedGenerator again from that seed when next asked for it.
            global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        except (ImportError, AttributeError):  # another Keras layout: its own function, import and all
            pass
        else:
            random.seed(seed)
            np.random.seed(seed)
            return
    keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def trace(directory: str):
    """The profiler's trace of what runs inside the block, written under ``directory``:
    ``jax.profiler`` on JAX, ``tf.profiler`` on TensorFlow."""
    if backend() == "jax":
        import jax

        start, stop = jax.profiler.start_trace, jax.profiler.stop_trace
    else:
        import tensorflow as tf

        start, stop = tf.profiler.experimental.start, tf.profiler.experimental.stop
    start(directory)
    try:
        yield
    finally:
        stop()


def tensorflow_profile_events(xplane_file) -> list[tuple[int, float, float, str]]:
    """The operations TensorFlow's profiler recorded on the CPU's compute threads, from its
    ``.xplane.pb``: (thread, start µs, duration µs, ``name:type``) each."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_file, "rb") as file:
        space.ParseFromString(file.read())
    events = []
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith(("tf_Compute", "tf_inter_op")):
                events += [
                    (line.id, e.offset_ps / 1e6, e.duration_ps / 1e6, names[e.metadata_id])
                    for e in line.events
                ]
    return events


def has_gpu() -> bool:
    if backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def device_name() -> str:
    if backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}:{getattr(device, 'device_kind', device)}"
    if backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu:{gpus[0].name}" if gpus else "cpu"
    return "cpu"


def describe_device() -> str:
    """The Keras backend and the device it computes on, for the start-up banner.

    E.g. ``tensorflow on CPU``, ``jax on gpu:0 (NVIDIA H200)``.
    """
    name = backend()
    if name == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return "jax on CPU"
        return f"jax on {device.platform}:{device.id} ({getattr(device, 'device_kind', device.platform)})"
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "tensorflow on CPU"
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"tensorflow on gpu:0 ({details.get('device_name', gpus[0].name)})"
    return f"{name} on CPU"


def resolve_precision(precision: str) -> str:
    """``auto`` → bfloat16 on a GPU, float32 on the CPU (bfloat16 matmuls are slow on most CPUs)."""
    valid = ("auto", "float32", "bfloat16", "float16")
    if precision not in valid:
        raise ValueError(f"Unknown precision '{precision}'; valid: {', '.join(valid)}.")
    if precision == "auto":
        return "bfloat16" if has_gpu() else "float32"
    return precision


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to_numpy(v) for v in tree)
    return np.asarray(tree)


def _metrics_to_floats(metrics: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def _global_norm(tensors) -> Any:
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors if t is not None))


def _all_finite(loss, grads, scaling: bool) -> Any:
    """Whether an update may be applied: a finite loss and, without loss scaling, finite gradients.

    Under loss scaling an overflowing gradient is routine and the ``LossScaleOptimizer`` already
    skips that step and lowers its scale, so only the loss is judged here.
    """
    finite = ops.all(ops.isfinite(loss))
    if not scaling:
        for grad in grads:
            if grad is not None:
                finite = ops.logical_and(finite, ops.all(ops.isfinite(grad)))
    return finite


def _rms(tensors) -> Any:
    count = sum(math.prod(t.shape) for t in tensors)
    return _global_norm(tensors) / math.sqrt(count)


def make_strategy(options) -> Any:
    """TensorFlow: a ``MirroredStrategy`` over ``compile.devices`` devices (0: every visible one; GPUs
    where there are any, else the CPU's logical devices), or None for one device or on JAX (whose
    runner splits the batch itself). The model and optimizer must be built in its ``scope()``."""
    devices = int(getattr(options, "devices", 1))
    if backend() != "tensorflow" or devices == 1:
        return None
    import tensorflow as tf

    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise ConfigError(
            f"compile.devices {devices}: {len(available)} {available[0].device_type} device(s) are visible "
            f"({', '.join(d.name for d in available)})."
        )
    if count == 1:
        return None
    return tf.distribute.MirroredStrategy([d.name for d in available[:count]])


def make_runner(model, optimizer, options, strategy=None):
    """Compile ``model``'s steps for the active backend, as ``options`` (the config's ``compile``) say.

    ``model`` is a Keras layer with ``train_loss(data) -> (loss, (metrics, updates))``,
    ``after_update()`` (state changes after each optimizer step, e.g. a slow critic) and
    ``policy_step(obs, carry, sample) -> (actions, carry, extra)``: DreamerV3 and PPO share the runners.
    ``options.unroll`` traces the model's time loops as Python loops (``dreamer_tf.nn.ops.unrolled``).
    On TensorFlow, ``strategy`` (``make_strategy``, in whose scope the model was built) splits each
    update over its devices.
    """
    jit, xla, unroll = bool(options.jit), bool(options.xla), bool(options.unroll)
    devices = int(getattr(options, "devices", 1))
    if backend() == "tensorflow" and jit and xla and not unroll:
        raise ValueError(
            "compile.xla on TensorFlow needs compile.unroll (--compile.unroll true): XLA cannot compile "
            "the gradient of the rolled time loops."
        )
    optimizer.build(model.trainable_variables)
    if backend() == "tensorflow":
        return TensorFlowRunner(model, optimizer, jit, xla, unroll, strategy)
    if backend() == "jax":
        return JaxRunner(model, optimizer, jit, unroll, devices)
    raise NotImplementedError(f"Keras backend '{backend()}' is not supported; use tensorflow or jax.")


def _call_policy(model, obs, carry, sample, noise):
    """``model.policy_step``, passing ``noise`` only when given (PPO's step draws its own)."""
    if noise is None:
        return model.policy_step(obs, carry, sample)
    return model.policy_step(obs, carry, sample, noise=noise)


def _unrolled(fn, unroll: bool):
    """``fn`` with the model's time loops traced unrolled or not."""
    if not unroll:
        return fn

    def wrapped(*args, **kwargs):
        with dops.unrolled():
            return fn(*args, **kwargs)

    return wrapped


class TensorFlowRunner:
    """``tf.function`` steps on the model's variables.

    With a ``strategy`` (``compile.devices`` > 1) each update is data-parallel, as on JAX: every
    device runs the forward and backward pass on its part of the batch (``strategy.run``), with the
    random draws and the return percentiles taken over the whole batch (``dreamer_tf.nn.ops``
    ``batch_draw``/``whole_batch``); the gradients are averaged, and the finite check, the optimizer
    step and the slow critic's update run once, on the mirrored variables. Metrics are the devices'
    mean; the replay's latent updates are concatenated in batch order.
    """

    def __init__(self, model, optimizer, jit: bool, xla: bool, unroll: bool = False, strategy=None) -> None:
        import tensorflow as tf

        self.tf = tf
        self.strategy = strategy
        self.model, self.optimizer = model, optimizer
        self.scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        wrap = (lambda fn: tf.function(fn, jit_compile=xla)) if jit else (lambda fn: fn)
        self._train = wrap(_unrolled(self._train_step, unroll))
        self._policy = wrap(_unrolled(self._policy_step, unroll))
        self._wrap = lambda fn: wrap(_unrolled(fn, unroll))  # noqa: E731
        self._calls: dict[Any, Any] = {}

    def _train_step(self, data):
        tf = self.tf
        variables = self.model.trainable_variables
        state = self.model.non_trainable_variables
        # The forward pass writes some of the model's state (normalisers, seeds); a skipped update
        # puts these values back. Reads are ordered before the later writes to the same variable.
        before = [tf.identity(v) for v in state]
        if self.strategy is None:
            loss, grads, metrics, updates = self._forward_backward(data)
        else:
            strategy, mean = self.strategy, tf.distribute.ReduceOp.MEAN
            with tf.control_dependencies(before):
                loss, grads, metrics, updates = strategy.run(self._replica_step, args=(data,))
            # Every device's loss is the mean over its equal part of the batch: their mean is the loss
            # of the whole batch, and so is the mean of their gradients.
            loss = strategy.reduce(mean, loss, axis=None)
            grads = [None if g is None else strategy.reduce(mean, g, axis=None) for g in grads]
            metrics = {k: strategy.reduce(mean, v, axis=None) for k, v in metrics.items()}
            updates = {k: strategy.gather(v, axis=0) for k, v in updates.items()}
        # The optimizer may only write the variables once the forward pass has used them.
        # TensorFlow orders each variable read before the later write, but not the read's
        # consumers: a read that no gradient depends on (the continue and reward heads on
        # imagined states, which only weight the actor loss) could see an in-place update
        # half done, so the same step on the same state gave different metrics now and then.
        with tf.control_dependencies(tf.nest.flatten((loss, metrics, updates))):
            grads = [None if g is None else tf.identity(g) for g in grads]
        finite = _all_finite(loss, grads, self.scaling)
        scale = ops.convert_to_tensor(self.optimizer.dynamic_scale) if self.scaling else None

        def apply():
            self.optimizer.apply(grads, variables)
            self.model.after_update()
            return tf.constant(0.0)

        def skip():
            for var, value in zip(state, before):
                var.assign(value)
            return tf.constant(1.0)

        skipped = tf.cond(finite, apply, skip)
        if self.scaling:
            grads = [g / scale for g in grads]
        metrics = dict(metrics)
        with tf.control_dependencies([skipped]):
            metrics.update(
                {
                    "opt/loss": loss,
                    "opt/grad_norm": _global_norm(grads),
                    "opt/grad_rms": _rms(grads),
                    "opt/param_rms": _rms([v.value for v in variables]),
                    "opt/updates": ops.cast(self.optimizer.iterations, "float32"),
                    "opt/skipped": skipped,
                }
            )
        return metrics, updates

    def _forward_backward(self, data):
        """The loss, its gradients, metrics and replay updates on ``data`` (no update)."""
        with self.tf.GradientTape() as tape:
            loss, (metrics, updates) = self.model.train_loss(data)
            scaled = self.optimizer.scale_loss(loss) if self.scaling else loss
        return loss, tape.gradient(scaled, self.model.trainable_variables), metrics, updates

    @property
    def device_count(self) -> int:
        """The devices one update is split over."""
        return 1 if self.strategy is None else self.strategy.num_replicas_in_sync

    def _replica_step(self, data):
        """One device's forward and backward pass on its part of the batch."""
        context = self.tf.distribute.get_replica_context()
        with dops.replicas(
            context.replica_id_in_sync_group, context.num_replicas_in_sync, context.all_gather
        ):
            return self._forward_backward(data)

    def _split(self, data: dict) -> Any:
        """The batch as the strategy's per-device values: equal consecutive parts of its first axis."""
        tf, count = self.tf, self.device_count
        size = len(next(iter(data.values())))
        if size % count:
            raise ValueError(
                f"A batch of {size} cannot be split evenly over {count} devices (compile.devices); "
                "choose a batch_size that is a multiple of the device count."
            )
        part = size // count

        def local(context):
            index = context.replica_id_in_sync_group
            return {k: tf.convert_to_tensor(v[index * part : (index + 1) * part]) for k, v in data.items()}

        return self.strategy.experimental_distribute_values_from_function(local)

    def _policy_step(self, obs, carry, sample, noise=None):
        return _call_policy(self.model, obs, carry, sample, noise)

    def train(self, data: dict) -> tuple[dict[str, float], dict]:
        if self.strategy is not None:
            data = self._split({k: np.asarray(v) for k, v in data.items()})
        metrics, updates = self._train(data)
        return _metrics_to_floats(metrics), _to_numpy(updates)

    def policy(self, obs: dict, carry: tuple, sample: bool = True, noise: tuple | None = None):
        """One policy step; ``noise`` (the model's per-step noise, arrays) replaces its own draws."""
        if noise is None:
            actions, carry, extra = self._policy(obs, tuple(carry), sample)
        else:
            actions, carry, extra = self._policy(obs, tuple(carry), sample, tuple(noise))
        return _to_numpy(actions), _to_numpy(carry), _to_numpy(extra)

    def call(self, fn, *args) -> Any:
        """``fn(*args)`` on the current weights as numpy, compiled once per ``fn`` when ``jit`` is on.

        For rare read-only passes such as the agent's report; state that ``fn`` writes is kept.
        """
        if fn not in self._calls:
            self._calls[fn] = self._wrap(fn)
        return _to_numpy(self._calls[fn](*args))

    def gradients(self, data: dict) -> list[np.ndarray]:
        """The unscaled loss gradient of every trainable variable at the current weights (no update)."""
        tf = self.tf
        data = {k: tf.convert_to_tensor(v) for k, v in data.items()}
        with tf.GradientTape() as tape:
            loss, _ = self.model.train_loss(data)
        return [np.asarray(g) for g in tape.gradient(loss, self.model.trainable_variables)]

    def sync(self) -> None:
        pass

    def reload(self) -> None:
        pass


class JaxRunner:
    """``jax.jit`` over stateless steps; the state (weights, optimizer) lives in the runner.

    ``devices`` > 1 (0: every visible device) trains data-parallel, as the official agent's
    ``jax.train_devices``: the state is replicated on a one-axis mesh, each batch is split along its
    first axis, and XLA partitions the one compiled step (its means and percentiles stay over the
    whole batch), so an update equals the one-device update up to float rounding. The symexp twohot
    reward and value predictions amplify that rounding while their outer bins (±4.9e8) still hold
    probability, early in training, so there the two runs drift apart as runs on other hardware do.
    """

    def __init__(self, model, optimizer, jit: bool, unroll: bool = False, devices: int = 1) -> None:
        import jax

        self.jax = jax
        self.model, self.optimizer = model, optimizer
        self.scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.trainable = list(model.trainable_variables)
        self.non_trainable = list(model.non_trainable_variables)
        self.mesh = _mesh(jax, devices)
        self.on_cpu = jax.devices()[0].platform == "cpu"
        self.reload()
        train, policy = _unrolled(self._train_step, unroll), _unrolled(self._policy_step, unroll)
        self._train = jax.jit(train, donate_argnums=(0,)) if jit else train
        self._policy = jax.jit(policy, static_argnums=(3,)) if jit else policy
        self.jit, self.unroll = jit, unroll
        self._calls: dict[Any, Any] = {}
        self._compiled: dict[Any, Any] = {}

    def reload(self) -> None:
        """Take the current values of the Keras variables as the runner's state."""
        # Copies, because the train step donates its input buffers and two variables may
        # share one array (the slow critic starts as the critic's values).
        copy = lambda v: self.jax.numpy.array(v.value, copy=True)  # noqa: E731
        self.state = (
            [copy(v) for v in self.trainable],
            [copy(v) for v in self.non_trainable],
            [copy(v) for v in self.optimizer.variables],
        )
        if self.mesh is not None:
            replicated = self.jax.sharding.NamedSharding(self.mesh, self.jax.sharding.PartitionSpec())
            self.state = self.jax.device_put(self.state, replicated)

    @property
    def device_count(self) -> int:
        """The devices one update is split over."""
        return 1 if self.mesh is None else self.mesh.devices.size

    def _split(self, data: dict) -> dict:
        """``data`` with every array split along its first (batch) axis over the mesh."""
        jax, count = self.jax, self.device_count
        size = len(next(iter(data.values())))
        if size % count:
            raise ValueError(
                f"A batch of {size} cannot be split evenly over {count} devices (compile.devices); "
                "choose a batch_size that is a multiple of the device count."
            )
        split = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("batch"))
        return {k: jax.device_put(v, split) for k, v in data.items()}

    def sync(self) -> None:
        """Write the runner's state back into the Keras variables."""
        trainable, non_trainable, opt = self.state
        for var, value in zip(self.trainable, trainable):
            var.assign(value)
        for var, value in zip(self.non_trainable, non_trainable):
            var.assign(value)
        for var, value in zip(self.optimizer.variables, opt):
            var.assign(value)

    def _scope(self, trainable, non_trainable):
        mapping = list(zip(self.trainable, trainable)) + list(zip(self.non_trainable, non_trainable))
        return keras.StatelessScope(state_mapping=mapping)

    def _updated(self, scope, values):
        new = []
        for var, old in zip(self.non_trainable, values):
            value = scope.get_current_value(var)
            new.append(old if value is None else value)
        return new

    def _loss(self, trainable, non_trainable, data):
        with self._scope(trainable, non_trainable) as scope:
            loss, aux = self.model.train_loss(data)
        scaled = loss
        if self.scaling:
            scaled = loss * self._loss_scale
        return scaled, (loss, aux, self._updated(scope, non_trainable))

    def _train_step(self, state, data):
        jax = self.jax
        trainable, non_trainable, opt = state
        if self.scaling:
            scale_var = self.optimizer.dynamic_scale
            index = [id(v) for v in self.optimizer.variables].index(id(scale_var))
            self._loss_scale = opt[index]
        grads, (loss, (metrics, updates), new_non_trainable) = jax.grad(self._loss, has_aux=True)(
            trainable, non_trainable, data
        )
        finite = _all_finite(loss, grads, self.scaling)
        new_trainable, new_opt = self.optimizer.stateless_apply(opt, grads, trainable)
        if self.scaling:
            grads = [g / self._loss_scale for g in grads]
        with self._scope(new_trainable, new_non_trainable) as scope:
            self.model.after_update()
        new_non_trainable = self._updated(scope, new_non_trainable)
        # A non-finite loss or gradient keeps the whole state as it was; selecting inside the
        # compiled step avoids a host round trip per update.
        # One conditional on the whole state rather than a select per variable, which XLA compiles
        # with its own copy of the chain of per-gradient checks (a quarter of the program's size).
        new_state = (new_trainable, new_non_trainable, new_opt)
        state = jax.lax.cond(finite, lambda: new_state, lambda: (trainable, non_trainable, opt))
        metrics = dict(metrics)
        metrics.update(
            {
                "opt/loss": loss,
                "opt/grad_norm": _global_norm(grads),
                "opt/grad_rms": _rms(grads),
                "opt/param_rms": _rms(state[0]),
                "opt/skipped": 1.0 - ops.cast(finite, "float32"),
            }
        )
        return state, (metrics, updates)

    def train_flops(self, data: dict) -> float:
        """Floating-point operations of one update on ``data``: XLA's cost analysis of the step as
        lowered (before optimisation), traced with unrolled time loops because the analysis counts a
        loop's body once. Traces the step again; runs nothing."""
        step = self.jax.jit(_unrolled(self._train_step, True))
        analysis = step.lower(self.state, data).cost_analysis()
        if isinstance(analysis, (list, tuple)):  # one entry per device program in older JAX
            analysis = analysis[0]
        return float(analysis["flops"])

    def gradients(self, data: dict) -> list[np.ndarray]:
        """The unscaled loss gradient of every trainable variable at the current weights (no update)."""
        trainable, non_trainable, _ = self.state
        self._loss_scale = 1.0
        scaling, self.scaling = self.scaling, False
        try:
            grads, _ = self.jax.jit(self.jax.grad(self._loss, has_aux=True))(trainable, non_trainable, data)
        finally:
            self.scaling = scaling
        return [np.asarray(g) for g in grads]

    def call(self, fn, *args) -> Any:
        """``fn(*args)`` on the runner's current weights as numpy, compiled once per ``fn`` when ``jit``
        is on. For rare read-only passes such as the agent's report: state that ``fn`` writes is dropped.
        """
        if fn not in self._calls:

            def stateless(trainable, non_trainable, args):
                with self._scope(trainable, non_trainable):
                    return fn(*args)

            stateless = _unrolled(stateless, self.unroll)
            self._calls[fn] = self.jax.jit(stateless) if self.jit else stateless
        trainable, non_trainable, _ = self.state
        return _to_numpy(self._calls[fn](trainable, non_trainable, args))

    def _policy_step(self, trainable, non_trainable, obs_carry, sample):
        obs, carry, noise = obs_carry
        with self._scope(trainable, non_trainable) as scope:
            actions, carry, extra = _call_policy(self.model, obs, carry, sample, noise)
        return (actions, carry, extra), self._updated(scope, non_trainable)

    def train(self, data: dict) -> tuple[dict[str, float], dict]:
        if self.mesh is not None:
            data = self._split(data)
        self.state, (metrics, updates) = self._train_step_for(data)(self.state, data)
        # One transfer for everything the host needs, instead of one blocking copy per scalar.
        metrics, updates, count = self.jax.device_get((metrics, updates, self.state[2][0]))
        metrics = _metrics_to_floats(metrics)
        metrics["opt/updates"] = float(count)
        return metrics, updates

    def _train_step_for(self, data: dict) -> Any:
        """The train step compiled for ``data``'s shapes.

        Compiled ahead of its first call rather than inside it, so that the compiler's freed memory
        (about a gigabyte at size1m) goes back to the system before the step's own buffers are
        allocated: otherwise both count towards the process's peak.
        """
        if not self.jit:
            return self._train
        key = tuple((k, np.shape(v), str(v.dtype)) for k, v in sorted(data.items()))
        if key not in self._compiled:
            compiled = self._train.lower(self.state, data).compile(compiler_options=self.compiler_options())
            self._compiled[key] = compiled
            allocator.release_free_memory()
            if self.on_cpu and _temp_bytes(compiled) > allocator.KEEP_LIMIT:
                allocator.map_large_buffers()
        return self._compiled[key]

    def compiler_options(self) -> dict[str, str]:
        """XLA options for compiling the train step.

        On the CPU, the scheduler that orders the step's operations to hold the fewest buffers at
        once: at size1m the step's temporary buffer is 279 instead of 365 MB on ``dmc_proprio`` and
        1.15 instead of 1.59 GB on ``dummy``, with the same operations and so the same numbers
        (docs/performance.md).
        """
        if not self.on_cpu:
            return {}
        return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}

    def policy(self, obs: dict, carry: tuple, sample: bool = True, noise: tuple | None = None):
        """One policy step; ``noise`` (the model's per-step noise, arrays) replaces its own draws."""
        trainable, non_trainable, opt = self.state
        noise = None if noise is None else tuple(noise)
        (actions, carry, extra), non_trainable = self._policy(
            trainable, non_trainable, (obs, tuple(carry), noise), sample
        )
        self.state = (trainable, non_trainable, opt)
        return _to_numpy(actions), _to_numpy(carry), _to_numpy(extra)


def _temp_bytes(compiled: Any) -> int:
    """The size of a compiled step's temporary buffer, 0 where XLA does not say."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except (AttributeError, NotImplementedError, RuntimeError):
        return 0


def _mesh(jax: Any, devices: int) -> Any:
    """A one-axis ``batch`` mesh over the first ``devices`` visible devices (0: all); None for one."""
    available = jax.devices()
    count = len(available) if devices == 0 else devices
    if count < 0 or count > len(available):
        raise ConfigError(
            f"compile.devices {devices}: {len(available)} {available[0].platform} device(s) are visible "
            "(0 uses them all)."
        )
    if count == 1:
        return None
    return jax.sharding.Mesh(np.array(available[:count]), ("batch",))


def save_tensorflow_functions(
    path: str, variables: list, functions: dict[str, tuple[Any, dict[str, tuple[tuple, str]]]], default: str
) -> None:
    """Write a TensorFlow SavedModel at ``path`` that serves each of ``functions`` as a signature.

    ``functions`` maps a name to ``(fn, inputs)``: ``fn`` takes one dict of tensors (``inputs``' keys,
    each ``(shape, dtype)`` with ``None`` for free sizes) and returns a dict of tensors. ``variables``
    (Keras variables the functions read) are saved with them; ``default`` also serves as
    ``serving_default``. The result loads with ``tf.saved_model.load`` alone. Needs the TensorFlow
    backend, whose Keras variables wrap ``tf.Variable``.
    """
    if backend() != "tensorflow":
        raise RuntimeError(f"A SavedModel is written on the TensorFlow backend, not on '{backend()}'.")
    import tensorflow as tf

    module = tf.Module()
    # Tracking the underlying tf.Variables makes the SavedModel store their values once.
    module.weights = [v.value for v in variables]
    signatures = {}
    for name, (fn, inputs) in functions.items():
        spec = {key: tf.TensorSpec(shape, dtype, name=key) for key, (shape, dtype) in inputs.items()}
        function = tf.function(fn, input_signature=[spec], autograph=False)
        setattr(module, name, function)
        signatures[name] = function.get_concrete_function()
    signatures["serving_default"] = signatures[default]
    tf.saved_model.save(module, path, signatures=signatures)
