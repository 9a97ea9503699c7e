"""Encode throughput of convpack against tiktoken (cl100k ranks, both split
patterns; prose, code, multilingual; 1 thread, a batch on every core as
lists and as one numpy array, and thread scaling).

The benchmark lives in ``convpack.bench.tokenizer`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_tokenizer.py [--quick]

Outputs are checked identical before timing; ratios are convpack / baseline.
"""

from __future__ import annotations

from convpack.bench import run_tiktoken_section, tokenizer

# The section's own function, for whoever imports this script.
run = tokenizer.run

if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
