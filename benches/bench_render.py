"""Conversations per second of convpack's rendering against the pure-Python
render nanochat uses (short and SmolTalk-like conversations; one by one
and in batches).

The benchmark lives in ``convpack.bench.render`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_render.py [--quick]

Outputs are checked identical before timing; ratios are convpack / baseline.
"""

from __future__ import annotations

from convpack.bench import render, run_tiktoken_section


def run(quick: bool = False) -> list:
    """The benchmark's rows (see ``convpack.bench`` for their keys).

    Args:
        quick: small inputs and one round (a smoke run).

    Returns:
        One dict per timed case.

    Raises:
        convpack.bench.BenchmarkMismatch: convpack's output differs from the baseline's.
    """
    return render.run(quick)


if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
