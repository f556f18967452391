"""Network blocks and distributions, written with ``keras.ops`` (no backend imports; the one JAX-only
operation, the encoder pool's reduction, is ``dreamer_tf.backend.window_max_and_positions``).

nets.py            linear, block-linear, norms, MLP, the image/vector encoder and decoder, heads
distributions.py   output distributions; sampling reads pre-drawn noise
ops.py             symlog, two-hot bins, λ-returns, normaliser statistics, the parity probes (``record``)
"""
