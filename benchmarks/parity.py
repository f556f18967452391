"""Numerical parity with the official DreamerV3: see dreamer_tf/harness/parity.py.

python benchmarks/parity.py setup --venv ~/dreamerv3-venv
python benchmarks/parity.py run --official ~/dreamerv3 --venv ~/dreamerv3-venv --backends tensorflow jax
python benchmarks/parity.py compare tests/fixtures/parity/tiny_disc.npz
"""

import sys

try:
    from dreamer_tf.harness.parity import main
except ModuleNotFoundError as error:
    if error.name != "dreamer_tf":
        raise
    sys.exit("dreamer_tf is not installed: run `pip install -e .` in the repository root (see README).")

if __name__ == "__main__":
    sys.exit(main())
