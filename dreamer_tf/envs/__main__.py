"""List the benchmark domains and tasks.

python -m dreamer_tf.envs --list              # every domain: task count, runnable, reason
python -m dreamer_tf.envs --domain atari      # the tasks of one domain
"""

from __future__ import annotations

import argparse
import sys

from dreamer_tf.envs.catalog import BENCHMARKS, domain_status, tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamer_tf.envs", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every domain with its status")
    parser.add_argument("--domain", help="list the tasks of this domain (e.g. atari, dmc_vision, bsuite)")
    args = parser.parse_args(argv)
    if args.domain:
        if args.domain not in BENCHMARKS and args.domain != "dmc":
            parser.error(f"unknown domain '{args.domain}'; domains: {', '.join(BENCHMARKS)}")
        for task in tasks(args.domain):
            print(task)
        return 0
    if not args.list:
        parser.print_help()
        return 0
    print(f"{'domain':<12} {'tasks':>5}  {'status':<11} reason")
    for name in BENCHMARKS:
        runnable, reason = domain_status(name)
        status = "runnable" if runnable else "unavailable"
        print(f"{name:<12} {len(tasks(name)):>5}  {status:<11} {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
