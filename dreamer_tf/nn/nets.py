"""Network building blocks: layers, encoder, decoder and output heads, in Keras 3.

Every layer is told its input size when it is constructed, so all weights exist
before the first call: parameter counts are known up front and no variable is
ever created inside a compiled loop (``keras.ops.scan`` / ``jax.jit``).
Parameters are float32; layers compute in their dtype policy's compute dtype
(bfloat16 or float16 under mixed precision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from dreamer_tf import backend
from dreamer_tf.nn import distributions as dists
from dreamer_tf.nn import ops as dops
from dreamer_tf.spaces import Space


def activation(name: str):
    if name == "none":
        return lambda x: x
    return getattr(keras.activations, name)


class FanInInit(keras.initializers.Initializer):
    """Truncated normal (±2σ) scaled to unit variance per fan-in, times ``scale``.

    1.1368 undoes the variance lost by truncation at two standard deviations.
    ``fan_in`` is given explicitly because block-diagonal kernels count the whole
    input width, as the official code does.
    """

    def __init__(self, fan_in: int, scale: float = 1.0) -> None:
        self.fan_in = fan_in
        self.scale = scale

    def __call__(self, shape, dtype=None):
        if self.scale == 0.0:
            return ops.zeros(shape, dtype or "float32")
        std = 1.1368 * math.sqrt(1.0 / self.fan_in) * self.scale
        return keras.random.truncated_normal(shape, stddev=1.0, dtype=dtype) * std

    def get_config(self) -> dict:
        return {"fan_in": self.fan_in, "scale": self.scale}


class Linear(keras.layers.Layer):
    def __init__(self, inputs: int, units: int, outscale: float = 1.0, bias: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inputs, self.units = inputs, units
        self.kernel = self.add_weight(
            shape=(inputs, units), initializer=FanInInit(inputs, outscale), name="kernel"
        )
        self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias") if bias else None

    def call(self, x):
        assert x.shape[-1] == self.inputs, (self.name, x.shape, self.inputs)
        x = ops.cast(x, self.compute_dtype)
        x = ops.matmul(x, ops.cast(self.kernel, self.compute_dtype))
        if self.bias is not None:
            x = x + ops.cast(self.bias, self.compute_dtype)
        return x


class BlockLinear(keras.layers.Layer):
    """Block-diagonal linear map: ``blocks`` independent dense maps of width/blocks each.

    ``layer(x, parts=3)`` splits every block's outputs into ``parts`` equal groups and returns one
    array per group (group j of every block, in block order): ``split(reshape(layer(x), (N, blocks,
    -1)), 3, -1)`` flattened, as the GRU takes its gates. On JAX each group is its own matmul, so it
    comes out contiguous; XLA on the CPU does not vectorise the exp and tanh of gates sliced out of
    one output (measured: 8 ms against under 2 ms for the GRU's gates at 1,024 × 512). TensorFlow
    splits one matmul's output, which its kernels run faster.
    """

    def __init__(self, inputs: int, units: int, blocks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        assert inputs % blocks == 0 and units % blocks == 0, (inputs, units, blocks)
        self.inputs, self.units, self.blocks = inputs, units, blocks
        self.kernel = self.add_weight(
            shape=(blocks, inputs // blocks, units // blocks), initializer=FanInInit(inputs), name="kernel"
        )
        self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias")

    def call(self, x, parts: int = 1, shared=None):
        """``layer(x)``; ``layer(own, shared=s)``: see :meth:`_with_shared`."""
        if shared is not None:
            return self._with_shared(x, shared)
        return self._blockwise(x, parts)

    def _blockwise(self, x, parts: int):
        assert x.shape[-1] == self.inputs, (self.name, x.shape, self.inputs)
        assert self.units % (self.blocks * parts) == 0, (self.name, self.units, self.blocks, parts)
        x = ops.cast(x, self.compute_dtype)
        lead = x.shape[:-1]
        # Blocks first and one batched matmul: the sums of einsum("nki,kio->nko"), which XLA on the
        # CPU lowers to kernel-times-input with the batch as the output's minor axis.
        x = to_blocks(x, self.blocks)
        width = self.units // self.blocks // parts
        shape = (*lead, self.units // parts) if None not in lead else (-1, self.units // parts)
        if parts == 1:
            return ops.reshape(self._on_blocks(x), shape)
        if keras.backend.backend() != "jax":
            # TensorFlow runs one matmul and splits faster than one matmul per group (size1m
            # dmc_proprio: 6% more updates per CPU-second); XLA the other way round. split, not
            # slices: the gradient is one concatenation rather than a padded copy per group.
            y = ops.reshape(self._on_blocks(x), (-1, self.blocks, parts, width))
            return [ops.reshape(part, shape) for part in ops.split(y, parts, axis=2)]
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.reshape(ops.cast(self.bias, self.compute_dtype), (self.blocks, 1, -1))
        outs = []
        for j in range(parts):
            cols = slice(j * width, (j + 1) * width)
            y = ops.matmul(x, kernel[:, :, cols]) + bias[:, :, cols]
            outs.append(ops.reshape(ops.transpose(y, (1, 0, 2)), shape))
        return outs

    def _on_blocks(self, x):
        """The layer on inputs blocks first, (blocks, N, inputs/blocks): (N, blocks, units/blocks)."""
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.reshape(ops.cast(self.bias, self.compute_dtype), (self.blocks, 1, -1))
        return ops.transpose(ops.matmul(x, kernel) + bias, (1, 0, 2))

    def _with_shared(self, own, shared):
        """The layer on inputs whose block k is ``[own's slice k | shared]``, without building them.

        ``own`` (N, blocks·d) is split across the blocks, ``shared`` (N, s) goes to every block
        whole. On JAX the shared part is one dense matmul against the blocks' shared rows side by
        side: the same sums as the layer on the built inputs, grouped in two partial sums, without
        the input repeated ``blocks`` times and the transposes around it (XLA on the CPU: 8% less
        time per size1m update). TensorFlow's kernels run the built inputs faster (by 9%), built
        blocks first so that only ``own`` is transposed (size1m dmc_proprio, with the gates split:
        6% more updates per CPU-second than transposing the built inputs).
        """
        g = self.blocks
        d = own.shape[-1] // g
        assert d + shared.shape[-1] == self.inputs // g, (self.name, own.shape, shared.shape, self.inputs)
        own, shared = ops.cast(own, self.compute_dtype), ops.cast(shared, self.compute_dtype)
        if keras.backend.backend() != "jax":
            x = ops.concatenate([to_blocks(own, g), ops.repeat(shared[None], g, axis=0)], -1)  # (g, N, d + s)
            return ops.reshape(self._on_blocks(x), (-1, self.units))
        kernel = ops.cast(self.kernel, self.compute_dtype)  # (g, d + s, units/g)
        blockwise = ops.matmul(to_blocks(own, g), kernel[:, :d])
        blockwise = ops.reshape(ops.transpose(blockwise, (1, 0, 2)), (-1, self.units))
        rows = ops.reshape(ops.transpose(kernel[:, d:], (1, 0, 2)), (shared.shape[-1], self.units))
        return blockwise + ops.matmul(shared, rows) + ops.cast(self.bias, self.compute_dtype)


def to_blocks(x, blocks: int):
    """(..., blocks·w) to blocks first, (blocks, N, w), N the product of the leading axes."""
    return ops.transpose(ops.reshape(x, (-1, blocks, x.shape[-1] // blocks)), (1, 0, 2))


class Conv2D(keras.layers.Layer):
    def __init__(self, inputs: int, depth: int, kernel: int, outscale: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inputs, self.depth = inputs, depth
        self.kernel = self.add_weight(
            shape=(kernel, kernel, inputs, depth),
            initializer=FanInInit(kernel * kernel * inputs, outscale),
            name="kernel",
        )
        self.bias = self.add_weight(shape=(depth,), initializer="zeros", name="bias")

    def call(self, x, upsampled: bool = False, pooled: bool = False):
        """A "same" convolution of ``x``; with ``upsampled``, of ``x`` upsampled 2× (:meth:`_upsampled`);
        with ``pooled``, followed by a 2×2 max-pool (:func:`max_pool2`).

        Pooled, the bias is added inside the pool (on JAX its gradient comes from the pooled output).
        """
        if upsampled:
            return self._upsampled(x)
        assert x.shape[-1] == self.inputs, (self.name, x.shape, self.inputs)
        x = ops.cast(x, self.compute_dtype)
        x = ops.conv(x, ops.cast(self.kernel, self.compute_dtype), strides=1, padding="same")
        bias = ops.cast(self.bias, self.compute_dtype)
        return max_pool2(x, bias) if pooled else x + bias

    def _upsampled(self, x):
        """The layer on ``x`` upsampled 2× by nearest neighbour, computed on ``x`` at its own
        resolution (sub-pixel convolution).

        Output pixel (2i + a, 2j + b) of a k × k convolution over the 2× nearest-neighbour upsampled
        input sees input pixels (i + du, j + dv) with du = floor((a + u) / 2) for the kernel offsets
        u in [-k//2, k//2], so each of the four phases (a, b) is a small convolution of ``x`` itself
        with sums of the kernel's taps; zero padding maps onto zero padding. The four phases are one
        convolution with 4 × depth outputs, interleaved after: for k = 5, 36 instead of 100
        multiply-adds per input pixel and channel pair, and no upsampled input in memory. The same
        sums in another grouping (float rounding differs).
        """
        assert x.shape[-1] == self.inputs, (self.name, x.shape, self.inputs)
        k = self.kernel.shape[0]
        taps = _phase_taps(k)  # (2, n, k)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        kernel = ops.einsum("adu,bev,uvio->deiabo", taps, taps, kernel)
        n = taps.shape[1]
        kernel = ops.reshape(kernel, (n, n, self.inputs, 4 * self.depth))
        x = ops.conv(ops.cast(x, self.compute_dtype), kernel, strides=1, padding="same")
        _, h, w, _ = x.shape
        x = ops.reshape(x, (-1, h, w, 2, 2, self.depth))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, 2 * h, 2 * w, self.depth))
        return x + ops.cast(self.bias, self.compute_dtype)


def _phase_taps(k: int) -> np.ndarray:
    """taps[a, du + r', u + r]: 1 where kernel offset u feeds phase a from input offset du."""
    r = k // 2
    half = -((-r) // 2)  # ceil(r / 2): the phases' kernels reach this far either side
    taps = np.zeros((2, 2 * half + 1, k), np.float32)
    for a in range(2):
        for u in range(-r, r + 1):
            taps[a, (a + u) // 2 + half, u + r] = 1.0
    return taps


class RMSNorm(keras.layers.Layer):
    """RMS normalisation over the last axis, computed in float32, with a learned scale."""

    def __init__(self, units: int, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps = eps
        self.scale = self.add_weight(shape=(units,), initializer="ones", name="scale")

    def call(self, x):
        dtype = x.dtype
        x = ops.cast(x, "float32")
        x = x * ops.rsqrt(ops.mean(ops.square(x), -1, keepdims=True) + self.eps) * self.scale
        return ops.cast(x, dtype)


def max_pool2(x, bias):
    """2×2 max-pool of ``x + bias``, (N, H, W, C) + (C,), as reshape + max (XLA's gradient of
    reduce_window is slow on CPU).

    On JAX with its own gradient, for memory, with the values of JAX's rule for ``max`` (the
    official code's): a window's gradient divided by the number of its positions that hold the
    maximum, at each of them. The backward pass keeps one small integer per window (which of its
    four positions hold the maximum, as bits), not the float mask of the built-in rule or the
    convolution output to compare against; and the bias's gradient is summed over windows (share ×
    count, exactly the sum of the window's shares), so the full-size gradient has one use, the
    kernel's gradient, and XLA writes it once, in the layout that reads it. On the encoder's first
    layer each of these is the size of the convolution's output and was live at the update's peak.
    TensorFlow keeps its built-in gradient (it multiplies by the reciprocal of the count instead,
    and the written-out one measured slower there).
    """
    _, h, w, c = x.shape

    def windows(x, bias):
        return ops.reshape(x + bias, (-1, h // 2, 2, w // 2, 2, c))

    if keras.backend.backend() != "jax":
        return ops.max(windows(x, bias), axis=(2, 4))

    @ops.custom_gradient
    def pool(x, bias):
        y, code = backend.window_max_and_positions(windows(x, bias), _POSITION_BITS, (2, 4))

        def grad(upstream):
            count = ops.cast(
                sum(ops.bitwise_and(ops.right_shift(code, k), 1) for k in range(4)), upstream.dtype
            )
            share = upstream / count
            bits = ops.bitwise_and(ops.right_shift(_window_axes(code), _POSITION_SHIFTS), 1)
            spread = ops.where(bits == 1, _window_axes(share), ops.zeros_like(_window_axes(share)))
            return ops.reshape(spread, (-1, h, w, c)), ops.sum(share * count, axis=(0, 1, 2))

        return y, grad

    return pool(x, bias)


# Position (i, j) of a 2×2 window as bit 2i + j, laid out as the window axes of (N, H/2, 2, W/2, 2, C).
_POSITION_SHIFTS = np.array([[0, 1], [2, 3]], "uint8").reshape(1, 1, 2, 1, 2, 1)
_POSITION_BITS = np.left_shift(1, _POSITION_SHIFTS).astype("uint8")


def _window_axes(x):
    """(N, H/2, W/2, C) → (N, H/2, 1, W/2, 1, C), to broadcast against a pool's windows."""
    return ops.expand_dims(ops.expand_dims(x, 2), 4)


def make_norm(kind: str, units: int, name: str, dtype) -> keras.layers.Layer | None:
    if kind == "none":
        return None
    if kind == "rms":
        return RMSNorm(units, name=name, dtype=dtype)
    raise ValueError(f"Unknown norm '{kind}'; valid: rms, none.")


class Dense(keras.layers.Layer):
    """Linear → norm → activation, the unit every MLP in DreamerV3 is made of."""

    def __init__(self, inputs: int, units: int, act: str = "silu", norm: str = "rms", **kwargs) -> None:
        super().__init__(**kwargs)
        self.linear = Linear(inputs, units, name="linear", dtype=self.dtype_policy)
        self.norm = make_norm(norm, units, "norm", self.dtype_policy)
        self.act = activation(act)

    def call(self, x):
        x = self.linear(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)


class MLP(keras.layers.Layer):
    def __init__(self, inputs: int, layers: int, units: int, act: str = "silu", norm: str = "rms", **kwargs):
        super().__init__(**kwargs)
        sizes = [inputs] + [units] * layers
        self.layers_ = [
            Dense(sizes[i], units, act, norm, name=f"dense{i}", dtype=self.dtype_policy)
            for i in range(layers)
        ]
        self.outputs = sizes[-1]

    def call(self, x):
        for layer in self.layers_:
            x = layer(x)
        return x


def flat_vectors(obs: dict, keys: Sequence[str], obs_space: dict[str, Space], symlog: bool = False):
    """The vector observations ``keys`` flattened per sample and concatenated: (N, total width)."""
    parts = []
    for key in keys:
        x = ops.reshape(ops.cast(obs[key], "float32"), (-1, math.prod(obs_space[key].shape)))
        parts.append(dops.symlog(x) if symlog else x)
    return ops.concatenate(parts, -1)


def split_obs_keys(obs_space: dict[str, Space]) -> tuple[list[str], list[str]]:
    """Vector keys (rank ≤ 2, flattened) and image keys (uint8 rank 3), excluding the reserved keys."""
    reserved = ("reward", "is_first", "is_last", "is_terminal")
    vec, img = [], []
    for key in sorted(obs_space):
        space = obs_space[key]
        if key in reserved or key.startswith("log/"):
            continue
        if space.is_image:
            img.append(key)
        elif len(space.shape) <= 2:
            vec.append(key)
        else:
            raise ValueError(
                f"Observation '{key}' with {space} is neither a vector (rank <= 2) nor a uint8 image (H, W, C)."
            )
    return vec, img


class Encoder(keras.layers.Layer):
    """Observations → tokens: an MLP over symlog'd vectors and a CNN over images, concatenated."""

    def __init__(
        self,
        obs_space: dict[str, Space],
        *,
        depth: int,
        mults: Sequence[int],
        layers: int,
        units: int,
        act: str,
        norm: str,
        symlog: bool,
        kernel: int,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.obs_space = obs_space
        self.veckeys, self.imgkeys = split_obs_keys(obs_space)
        assert self.veckeys or self.imgkeys, f"No observation to encode in {obs_space}"
        self.symlog = symlog
        self.outputs = 0
        policy = self.dtype_policy
        if self.veckeys:
            size = sum(math.prod(obs_space[k].shape) for k in self.veckeys)
            self.mlp = MLP(size, layers, units, act, norm, name="mlp", dtype=policy)
            self.outputs += units
        if self.imgkeys:
            shapes = {obs_space[k].shape[:2] for k in self.imgkeys}
            assert len(shapes) == 1, f"Image observations must share height and width: {shapes}"
            (height, width) = shapes.pop()
            channels = sum(obs_space[k].shape[-1] for k in self.imgkeys)
            self.convs, self.conv_norms = [], []
            for i, mult in enumerate(mults):
                self.convs.append(Conv2D(channels, depth * mult, kernel, name=f"conv{i}", dtype=policy))
                self.conv_norms.append(make_norm(norm, depth * mult, f"conv{i}norm", policy))
                channels = depth * mult
                height, width = height // 2, width // 2
            assert 3 <= height <= 16 and 3 <= width <= 16, (
                f"Images of {obs_space[self.imgkeys[0]].shape} shrink to {height}x{width} after "
                f"{len(mults)} poolings; use 64x64 or 96x96 images."
            )
            self.outputs += height * width * channels
        self.act = activation(act)

    def call(self, obs: dict):
        """``obs`` values have shape (N, *space.shape); returns (N, outputs)."""
        outs = []
        if self.veckeys:
            outs.append(self.mlp(flat_vectors(obs, self.veckeys, self.obs_space, self.symlog)))
        if self.imgkeys:
            x = ops.concatenate([ops.cast(obs[k], "float32") for k in self.imgkeys], -1)
            x = ops.cast(x / 255.0 - 0.5, self.compute_dtype)
            for conv, norm in zip(self.convs, self.conv_norms):
                x = conv(x, pooled=True)
                if norm is not None:
                    x = norm(x)
                x = self.act(x)
            # The static feature size, so that a batch of unknown size (an exported policy) still works.
            outs.append(ops.reshape(x, (-1, math.prod(x.shape[1:]))))
        return ops.concatenate([ops.cast(x, self.compute_dtype) for x in outs], -1)


class Decoder(keras.layers.Layer):
    """Latent features → reconstructions: symlog-MSE for vectors, sigmoid-MSE for images."""

    def __init__(
        self,
        obs_space: dict[str, Space],
        deter: int,
        stoch: int,
        *,
        depth: int,
        mults: Sequence[int],
        layers: int,
        units: int,
        act: str,
        norm: str,
        outscale: float,
        kernel: int,
        bspace: int,
        symlog: bool,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.obs_space = obs_space
        self.veckeys, self.imgkeys = split_obs_keys(obs_space)
        self.symlog = symlog
        self.deter, self.stoch = deter, stoch
        policy = self.dtype_policy
        self.act = activation(act)
        if self.veckeys:
            self.mlp = MLP(deter + stoch, layers, units, act, norm, name="mlp", dtype=policy)
            self.vec_out = {
                k: Linear(units, math.prod(obs_space[k].shape), outscale, name=f"out_{k}", dtype=policy)
                for k in self.veckeys
            }
        if self.imgkeys:
            height, width = obs_space[self.imgkeys[0]].shape[:2]
            self.img_channels = [obs_space[k].shape[-1] for k in self.imgkeys]
            depths = [depth * m for m in mults]
            factor = 2 ** len(depths)
            self.minres = (height // factor, width // factor)
            self.bspace = bspace
            self.space_units = self.minres[0] * self.minres[1] * depths[-1]
            if bspace:
                # Deter feeds a block-diagonal map into the spatial grid (cheap for large deter);
                # stoch goes through a small MLP; the two are summed (official "bspace" decoder).
                self.sp0 = BlockLinear(deter, self.space_units, bspace, name="sp0", dtype=policy)
                self.sp1 = Dense(stoch, 2 * units, act, norm, name="sp1", dtype=policy)
                self.sp2 = Linear(2 * units, self.space_units, name="sp2", dtype=policy)
            else:
                self.space = Linear(deter + stoch, self.space_units, name="space", dtype=policy)
            self.space_norm = make_norm(norm, depths[-1], "spacenorm", policy)
            self.convs, self.conv_norms = [], []
            channels = depths[-1]
            for i in reversed(range(len(depths) - 1)):
                self.convs.append(Conv2D(channels, depths[i], kernel, name=f"conv{i}", dtype=policy))
                self.conv_norms.append(make_norm(norm, depths[i], f"conv{i}norm", policy))
                channels = depths[i]
            self.img_out = Conv2D(
                channels, sum(self.img_channels), kernel, outscale, name="imgout", dtype=policy
            )
            self.last_depth = depths[-1]

    def call(self, deter, stoch) -> dict:
        """``deter`` (N, deter) and flat ``stoch`` (N, stoch·classes); returns a distribution per key."""
        out = {}
        if self.veckeys:
            x = self.mlp(ops.concatenate([ops.cast(stoch, self.compute_dtype), deter], -1))
            for key in self.veckeys:
                pred = self.vec_out[key](x)
                pred = ops.reshape(pred, (-1, *self.obs_space[key].shape))
                out[key] = dists.MSE(pred, symlog=self.symlog)
        if self.imgkeys:
            h, w = self.minres
            if self.bspace:
                g = self.bspace
                x0 = self.sp0(deter)
                x0 = ops.reshape(x0, (-1, g, h, w, self.last_depth // g))
                x0 = ops.reshape(ops.transpose(x0, (0, 2, 3, 1, 4)), (-1, h, w, self.last_depth))
                x1 = ops.reshape(self.sp2(self.sp1(stoch)), (-1, h, w, self.last_depth))
                x = x0 + x1
            else:
                x = self.space(ops.concatenate([deter, ops.cast(stoch, self.compute_dtype)], -1))
                x = ops.reshape(x, (-1, h, w, self.last_depth))
            if self.space_norm is not None:
                x = self.space_norm(x)
            x = self.act(x)
            # Each convolution runs on the 2× upsampled input, computed at the input's own
            # resolution (Conv2D._upsampled: the same sums).
            for conv, norm in zip(self.convs, self.conv_norms):
                x = conv(x, upsampled=True)
                if norm is not None:
                    x = norm(x)
                x = self.act(x)
            x = ops.sigmoid(ops.cast(self.img_out(x, upsampled=True), "float32"))
            splits = np.cumsum(self.img_channels)[:-1].tolist()
            parts = ops.split(x, splits, axis=-1) if splits else [x]
            for key, part in zip(self.imgkeys, parts):
                out[key] = dists.MSE(part)
        return out


class Head(keras.layers.Layer):
    """MLP followed by an output distribution.

    ``output`` is one of ``symexp_twohot`` (reward, critic), ``mse``,
    ``symlog_mse``, ``binary`` (continue), ``categorical`` (discrete actor) or
    ``bounded_normal`` (continuous actor).
    """

    def __init__(
        self,
        inputs: int,
        output: str,
        shape: tuple[int, ...] = (),
        layers: int = 1,
        units: int = 1024,
        act: str = "silu",
        norm: str = "rms",
        outscale: float = 1.0,
        bins: int = 255,
        classes: int = 0,
        unimix: float = 0.0,
        minstd: float = 0.1,
        maxstd: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        policy = self.dtype_policy
        self.output_kind = output
        self.shape = shape
        self.mlp = MLP(inputs, layers, units, act, norm, name="mlp", dtype=policy)
        size = units if layers else inputs
        self.unimix, self.minstd, self.maxstd = unimix, minstd, maxstd
        if output == "symexp_twohot":
            self.bins = dops.symexp_bins(bins)
            self.out = Linear(size, bins, outscale, name="logits", dtype=policy)
        elif output in ("mse", "symlog_mse", "binary"):
            self.out = Linear(size, 1, outscale, name="out", dtype=policy)
        elif output == "categorical":
            assert classes > 1, classes
            self.out = Linear(size, classes, outscale, name="logits", dtype=policy)
        elif output == "bounded_normal":
            dims = math.prod(shape)
            self.out = Linear(size, dims, outscale, name="mean", dtype=policy)
            self.out_std = Linear(size, dims, outscale, name="std", dtype=policy)
        else:
            raise ValueError(
                f"Unknown head output '{output}'; valid: symexp_twohot, mse, symlog_mse, binary, "
                "categorical, bounded_normal."
            )

    def call(self, x):
        x = self.mlp(x)
        kind = self.output_kind
        if kind == "symexp_twohot":
            return dists.TwoHot(self.out(x), self.bins)
        if kind in ("mse", "symlog_mse"):
            return dists.MSE(self.out(x)[..., 0], symlog=kind == "symlog_mse")
        if kind == "binary":
            return dists.Bernoulli(self.out(x)[..., 0])
        if kind == "categorical":
            return dists.Categorical(self.out(x), self.unimix)
        return dists.BoundedNormal(self.out(x), self.out_std(x), self.minstd, self.maxstd)
