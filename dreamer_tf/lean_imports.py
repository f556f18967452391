"""Importing Keras without the optional packages it loads for features a training process never uses.

When they are installed, importing Keras loads matplotlib (for ``keras.visualization``) and pandas
(to slice DataFrames passed to ``Model.fit``): about 57 MB and half a second in every process, for
plots and DataFrames that this project never asks Keras for. Keras imports both inside
``try``/``except ImportError``, so inside :func:`without_keras_extras` they count as missing while
Keras is imported; on leaving, they can be imported again as usual (the report and the figures
import them themselves). Keras then keeps its own note that they are missing: its plotting helpers
and DataFrame inputs do not work in that process, which is why only the command lines that train,
evaluate or time an agent use it (through ``dreamer_tf.run.train.resolve_agent`` and
``benchmarks/throughput.py``); where Keras is already imported it changes nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

KERAS_EXTRAS = ("matplotlib", "pandas")


@contextlib.contextmanager
def without_keras_extras() -> Iterator[None]:
    """Inside, ``import matplotlib`` and ``import pandas`` fail unless they were already imported."""
    if "keras" in sys.modules:  # too late: Keras has made its choice
        yield
        return
    blocked = [name for name in KERAS_EXTRAS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # an import of a module mapped to None raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
