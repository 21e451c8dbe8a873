"""Counts how the bad-input corpus (`tests/bad_input_cases.py`) ends: clear / vague / traceback / silent-wrong.

Every case runs in-process on tiny damaged files (`tests/bad_input_fixtures.py`); a case is clear when
it exits with the expected status (or raises the expected type) and prints one line naming the file,
row, field or flag. The target is 0 vague, 0 traceback, 0 silent-wrong. Prints the counts, then every
case that is not clear with what came out, and writes the table to `--out` (markdown).

    python benchmarks/bad_input_outcomes.py [--only generate] [--out benchmarks/results/bad_inputs.md]
"""

import argparse
import collections
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

OUTCOMES = ("clear", "vague", "traceback", "silent-wrong")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only cases whose id contains this text")
    parser.add_argument("--verbose", action="store_true", help="print each case's verdict and time as it ends")
    parser.add_argument("--out", help="also write the counts and the non-clear cases here (markdown)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from bad_input_cases import CASES, classify, describe, run_case
    from bad_input_fixtures import build_workspace

    warnings.simplefilter("ignore")
    cases = [case for case in CASES if not args.only or args.only in case.id]
    with tempfile.TemporaryDirectory() as root:
        workspace = build_workspace(root)
        start = time.perf_counter()
        results = []
        for case in cases:
            case_start = time.perf_counter()
            outcome = run_case(case, workspace)
            results.append((case, classify(case, outcome), outcome))
            if args.verbose:
                print(f"{time.perf_counter() - case_start:6.2f} s  {results[-1][1]:12s} {case.id}", flush=True)
        seconds = time.perf_counter() - start
    counts = collections.Counter(verdict for _, verdict, _ in results)
    by_kind = collections.Counter(case.kind if case.kind in ("cli", "call") else "script" for case in cases)
    lines = [
        f"bad-input corpus: {len(cases)} cases ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))}) "
        f"in {seconds:.1f} s",
        "",
        "| outcome | cases |",
        "|---|---:|",
        *(f"| {name} | {counts.get(name, 0)} |" for name in OUTCOMES),
        "",
    ]
    for case, verdict, outcome in results:
        if verdict != "clear":
            lines.append(f"- {verdict}: `{case.id}` (want {getattr(case.expect, '__name__', case.expect)}, "
                         f"/{case.match}/): {describe(case, outcome)}")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
