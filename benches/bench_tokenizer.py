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

from convpack.bench import tokenizer
from convpack.bench.report import table


def run(quick: bool = False) -> list:
    """The benchmark's rows (see ``convpack.bench`` for their keys)."""
    return tokenizer.run(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, short timings")
    print(table(run(parser.parse_args().quick)))
