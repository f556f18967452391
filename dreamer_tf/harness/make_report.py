"""Render the paper-style report of a sweep: tables, figures and index.html.

    python scripts/make_report.py --runs runs/ --out reports/short
    DREAMER_REFERENCE_SCORES=~/dreamerv3_scores python scripts/make_report.py --runs runs/ --out reports/x

Reads every run under ``--runs`` (the folders ``benchmarks/run_suite.py`` makes, or any run folders
of ``python -m dreamer_tf``) and the published DreamerV3 and PPO curves from the folder in
``$DREAMER_REFERENCE_SCORES`` (or ``--reference``; get them with ``scripts/download_scores.py``).
Without published curves the report says so and shows our runs alone. See
``dreamer_tf/harness/report.py`` for what the output folder holds; open ``<out>/index.html``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from dreamer_tf.harness.report import build_report
from dreamer_tf.harness.results import REFERENCE_ENV, Published, ReferenceScoresError
from dreamer_tf.harness.suite import SUITES_PATH, Suite, SuiteError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="the sweep's outdir (or any folder of run folders)")
    parser.add_argument("--out", required=True, help="report folder, e.g. reports/short")
    parser.add_argument("--reference", help=f"published scores folder (default: ${REFERENCE_ENV})")
    parser.add_argument("--suite", default=str(SUITES_PATH), help="the suite file")
    parser.add_argument("--bins", type=int, default=30, help="points per learning curve (default 30)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument(
        "--x-range",
        choices=["ours", "published"],
        default="ours",
        help="learning curves up to our furthest step (default) or to the end of the published curves",
    )
    parser.add_argument(
        "--all-methods",
        action="store_true",
        help="also draw the published methods other than DreamerV3 and PPO (suites.yaml `methods`) in the "
        "per-task curves; the per-domain figures always show them",
    )
    parser.add_argument(
        "--at",
        type=float,
        default=0,
        metavar="STEPS",
        help="report the runs as they stood at STEPS env steps (later episodes left out), against the "
        "published curves at the same step",
    )
    args = parser.parse_args(argv)
    if args.at < 0:
        print(f"error: --at {args.at:g} must be a positive number of env steps", file=sys.stderr)
        return 2
    runs = Path(args.runs)
    if not runs.is_dir():
        print(f"error: --runs {runs} is not a folder", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        suite = Suite.load(args.suite)
    except SuiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = shlex.join(["scripts/make_report.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        # An absent folder only leaves the published curves out (the report says so); a corrupt file
        # in a folder the user pointed at is an error: a report silently missing curves would mislead.
        reference = Published(args.reference or os.environ.get(REFERENCE_ENV) or None)
        report = build_report(
            runs,
            args.out,
            suite,
            reference,
            bins=args.bins,
            reps=args.reps,
            x_range=args.x_range,
            command=command,
            all_methods=args.all_methods,
            at=int(args.at),
        )
    except ReferenceScoresError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report["counts"].items())) or "no runs"
    print(f"Runs: {counts}. {report['published']}.", file=sys.stderr)
    for note in report["notes"]:
        print(f"Note: {note}", file=sys.stderr)
    index = Path(args.out).resolve() / "index.html"
    print(f"Report in {time.monotonic() - start:.0f} s: {index}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
