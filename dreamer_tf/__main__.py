"""``python -m dreamer_tf``: train an agent on a task (the ``dreamer-tf`` command)."""

import sys

from dreamer_tf.run.train import main

if __name__ == "__main__":
    sys.exit(main())
