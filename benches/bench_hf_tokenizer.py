"""Encode throughput of convpack's Tokenizer.from_hf against the tokenizers
library on the same tokenizer.json (cl100k, o200k, Llama 3, Qwen 3; built
offline from installed ranks), and against tiktoken for cl100k and o200k.

The benchmark lives in ``convpack.bench.hf_tokenizer`` so that ``convpack
bench`` runs it after ``pip install``; this script runs it alone:

    python benches/bench_hf_tokenizer.py [--quick]

Needs ``tokenizers`` and ``quicktok-v1`` (Llama 3, Qwen 3, o200k ranks);
what is missing is named in a note. Ids are checked identical before timing.
"""

from __future__ import annotations

from convpack.bench import hf_tokenizer, run_tiktoken_section

# The section's own function, for whoever imports this script.
run = hf_tokenizer.run

if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
