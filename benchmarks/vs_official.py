"""Ours against the official code on the same machine: see dreamer_tf/harness/vs_official.py."""

import sys

try:
    from dreamer_tf.harness.vs_official import main
except ModuleNotFoundError as error:
    if error.name != "dreamer_tf":
        raise
    sys.exit("dreamer_tf is not installed: run `pip install -e .` in the repository root (see README).")

if __name__ == "__main__":
    sys.exit(main())
