"""Conversations per second of convpack's rendering against the pure-Python
render nanochat uses (short and SmolTalk-like conversations; one by one
and in batches).

The benchmark lives in ``convpack.bench.render`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_render.py [--quick]

Outputs are checked identical before timing; ratios are convpack / baseline.
"""

from __future__ import annotations

import argparse

from convpack.bench import render
from convpack.bench.report import table


def run(quick: bool = False) -> list:
    """The benchmark's rows (see ``convpack.bench`` for their keys)."""
    return render.run(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, short timings")
    print(table(run(parser.parse_args().quick)))
