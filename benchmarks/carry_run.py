"""Pack a run folder into one file to carry it between machines, and unpack it: see dreamer_tf/harness/carry.py."""

import sys

try:
    from dreamer_tf.harness.carry import main
except ModuleNotFoundError as error:
    if error.name != "dreamer_tf":
        raise
    sys.exit("dreamer_tf is not installed: run `pip install -e .` in the repository root (see README).")

if __name__ == "__main__":
    sys.exit(main())
