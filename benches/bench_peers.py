"""Every fast exact encoder installed (quicktok, fastokens, bpe-openai,
riptoken, HF tokenizers) and convpack against tiktoken on cl100k: one
thread per document, batches of lists and flat batches on every core and on
one thread; English, code, multilingual and chat text.

The benchmark lives in ``convpack.bench.peers`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    pip install '.[peers]'
    python benches/bench_peers.py [--quick]

Each encoder is checked id for id against tiktoken on every document before
it is timed; one that differs is timed and marked with how many documents
differ.
"""

from __future__ import annotations

from convpack.bench import peers, run_tiktoken_section

# The section's own function, for whoever imports this script.
run = peers.run

if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
