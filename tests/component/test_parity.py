"""Our agent against the official DreamerV3, without the official code: golden fixtures it computed.

Each fixture in ``tests/fixtures/parity`` holds the official agent's initial parameters (moved away
from the initialisation, see ``perturb`` in ``benchmarks/parity_official.py``), a replayed
batch with episode boundaries, every random draw, and what the official agent computed from them:
encoder tokens, posterior and prior logits, each loss, the imagined trajectories, λ-returns,
normalisers, advantages, gradients, two LaProp updates, the slow critic and a policy step. How they
were made (official commit and command) is in ``docs/parity.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamer_tf.harness import parity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
GROUPS = {label for label, _ in parity.GROUPS}


@pytest.mark.parametrize("case", ["tiny_disc", "tiny_cont"])
def test_every_term_matches_the_official_agent(case):
    report = parity.compare_file(FIXTURES / f"{case}.npz")
    failed = [f"{r['term']}: relative {r['relative']:.1e}" for r in report["rows"] if not r["passed"]]
    assert not failed, "terms that differ from the official agent:\n" + "\n".join(failed)
    # Every group of the report was compared (a term dropped from either side would shrink this).
    assert {row["group"] for row in report["table"]} >= GROUPS
    gradients = [r for r in report["rows"] if r["term"].startswith("grad1/")]
    assert len(gradients) >= 90  # one per weight tensor of the tiny agent


def test_a_deviation_from_the_official_agent_fails(monkeypatch):
    """A 1% uniform mix in the discrete actor (which the official 'categorical' output does not have)."""
    original = parity.case_config
    monkeypatch.setattr(
        parity, "case_config", lambda meta: original(meta).update({"agent.policy.unimix": 0.01})
    )
    report = parity.compare_file(FIXTURES / "tiny_disc.npz")
    failed = {r["term"] for r in report["rows"] if not r["passed"]}
    assert "out/imag/logpi/action" in failed and "grad1/pol/head/action/logits/kernel" in failed
    assert not any(term.startswith(("out/tokens", "out/losses/dyn", "grad1/dyn/")) for term in failed)
