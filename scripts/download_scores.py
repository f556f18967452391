"""Fetch the published DreamerV3 curves and baselines: see dreamer_tf/harness/download_scores.py."""

import sys

try:
    from dreamer_tf.harness.download_scores import main
except ModuleNotFoundError as error:
    if error.name != "dreamer_tf":
        raise
    sys.exit("dreamer_tf is not installed: run `pip install -e .` in the repository root (see README).")

if __name__ == "__main__":
    sys.exit(main())
