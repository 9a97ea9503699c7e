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

# The section's own function, for whoever imports this script.
run = render.run

if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
