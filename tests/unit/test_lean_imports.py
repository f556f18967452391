"""A training process imports Keras without matplotlib and pandas, and can still import them later."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dreamer_tf.lean_imports import without_keras_extras

SCRIPT = """
import sys
from dreamer_tf.run.train import resolve_agent
resolve_agent("dreamerv3")
print("keras" in sys.modules, "matplotlib" in sys.modules, "pandas" in sys.modules)
import matplotlib.pyplot, pandas
print(pandas.DataFrame({"a": [1]}).shape)
"""


def test_the_train_command_imports_keras_without_matplotlib_and_pandas():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["True False False", "(1, 1)"], done.stdout


def test_the_extras_are_blocked_only_inside_and_only_when_not_yet_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setitem(sys.modules, "pandas", sys.modules.get("pandas") or object())
    with without_keras_extras():
        with pytest.raises(ImportError):
            import matplotlib  # noqa: F401
        assert sys.modules["pandas"] is not None  # already imported: left alone
    assert "matplotlib" not in sys.modules or sys.modules["matplotlib"] is not None
