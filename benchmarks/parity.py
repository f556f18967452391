"""Numerical parity with the official DreamerV3: see dreamer_tf/bench/parity.py.

python benchmarks/parity.py setup --venv ~/dreamerv3-venv
python benchmarks/parity.py run --official ~/dreamerv3 --venv ~/dreamerv3-venv --backends tensorflow jax
python benchmarks/parity.py compare tests/fixtures/parity/tiny_disc.npz
"""

import sys

from dreamer_tf.bench.parity import main

if __name__ == "__main__":
    sys.exit(main())
