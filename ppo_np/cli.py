"""The ``ppo-np`` command line.

    ppo-np gradcheck [--json] [--seed S] [--trials K]

Exit status: 0 on success, 1 when a check fails, 2 on bad usage (with a message, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from ppo_np.gradcheck import DEFAULT_TOL, run_suite

    checks = run_suite(seed=args.seed, trials=args.trials)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"checks": [c._asdict() for c in checks], "ok": ok}))
    else:
        width = max(len(c.component) for c in checks)
        print(f"{'component':<{width}}  {'param':<10}  {'max rel error':>13}  result")
        for c in checks:
            print(f"{c.component:<{width}}  {c.param:<10}  {c.max_rel_error:13.3e}  {'pass' if c.ok else 'FAIL'}")
        print(f"{sum(c.ok for c in checks)}/{len(checks)} checks below {DEFAULT_TOL:g}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppo-np", description="PPO in NumPy + Numba, every gradient by hand.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grad = sub.add_parser("gradcheck", help="check every hand-written gradient against finite differences")
    grad.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    grad.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the random test points")
    grad.add_argument("--trials", type=_positive_int, default=3, help="random points per component (worst kept)")
    grad.set_defaults(func=_cmd_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
