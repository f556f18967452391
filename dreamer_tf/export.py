"""``python -m dreamer_tf.export``: write a run's policy as a TensorFlow SavedModel (``dreamer-tf-export``).

See ``dreamer_tf.run.export``.
"""

import sys

from dreamer_tf.run.export import main

if __name__ == "__main__":
    sys.exit(main())
