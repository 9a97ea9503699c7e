"""Rendering with Llama 3's and Qwen 3's chat templates: convpack against
transformers' apply_chat_template on the same tokenizer.json and
conversations (conversations/s, one thread and every core).

The benchmark lives in ``convpack.bench.template`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_template.py [--quick]

Needs ``transformers``, ``tokenizers`` and ``quicktok-v1``; what is missing
is named in a note. Ids are checked identical before timing.
"""

from __future__ import annotations

from convpack.bench import run_tiktoken_section, template

# The section's own function, for whoever imports this script.
run = template.run

if __name__ == "__main__":
    run_tiktoken_section(run, __doc__.splitlines()[0])
