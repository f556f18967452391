"""``python -m dreamer_tf.eval``: evaluate a run's checkpoint (the ``dreamer-tf-eval`` command).

See ``dreamer_tf.run.evaluate``.
"""

import sys

from dreamer_tf.run.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
