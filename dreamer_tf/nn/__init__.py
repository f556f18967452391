"""Network blocks and distributions, written with ``keras.ops`` only (no backend imports).

nets.py            linear, block-linear, norms, MLP, the image/vector encoder and decoder, heads
distributions.py   output distributions; sampling reads pre-drawn noise
ops.py             symlog, two-hot bins, λ-returns, normaliser statistics, the parity probes (``record``)
"""
