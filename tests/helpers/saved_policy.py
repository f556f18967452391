"""Steps an exported policy with TensorFlow and NumPy alone; run as a script in a fresh process.

    python -I tests/helpers/saved_policy.py EXPORT_DIR INPUTS.npz OUTPUTS.npz

``INPUTS.npz`` holds per step ``t``: ``<t>/<input name>`` for every observation input, ``is_first``
and the noise (``stoch_noise``, ``action_noise``); the carry starts from the ``initial_carry``
signature and is fed back. ``OUTPUTS.npz`` gets ``<signature>/<t>/<output name>`` for the signatures
``serving_default`` and ``policy_greedy``. dreamer_tf cannot be
imported here, and the script fails if loading or stepping the export imported any Keras module
(``import tensorflow`` itself brings in its Keras shim, so only modules imported after it count):
an export must load without them.
"""

import json
import sys


class _Refuse:
    """A meta path finder that refuses dreamer_tf, as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "dreamer_tf":
            raise ImportError(f"{name} must not be needed to load an export")
        return None


sys.meta_path.insert(0, _Refuse())

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BEFORE = set(sys.modules)


def main() -> None:
    folder, inputs_path, outputs_path = sys.argv[1:4]
    spec = json.load(open(f"{folder}/policy.json"))
    policy = tf.saved_model.load(f"{folder}/saved_model")
    data = np.load(inputs_path)
    steps = sorted({int(k.split("/")[0]) for k in data.files})
    batch = len(data["0/is_first"])
    outputs = {}
    for name in ("serving_default", "policy_greedy"):
        carry = policy.signatures["initial_carry"](batch_size=tf.constant(batch, tf.int32))
        for t in steps:
            feed = {k: tf.constant(data[f"{t}/{k}"]) for k in spec["inputs"] if f"{t}/{k}" in data.files}
            feed.update(carry)
            assert set(feed) == set(spec["inputs"]), sorted(set(spec["inputs"]) ^ set(feed))
            out = policy.signatures[name](**feed)
            carry = {k: out[k] for k in spec["carry"]["names"]}
            outputs.update({f"{name}/{t}/{k}": v.numpy() for k, v in out.items()})
    np.savez(outputs_path, **outputs)
    imported = sorted(m for m in set(sys.modules) - BEFORE if m.split(".")[0] in ("dreamer_tf", "keras"))
    assert not imported, f"loading the export imported {imported[:5]}"
    print("ok")


if __name__ == "__main__":
    main()
