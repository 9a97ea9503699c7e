"""Hugging Face ``tokenizer.json`` files built from real ranks, offline.

The builder lives in the package (``convpack.bench.hf_files``) so that the
benchmarks time the same files the tests check; this module keeps the names
the tests import. See that module for the families and variants.
"""

from __future__ import annotations

from convpack.bench.hf_files import (  # noqa: F401
    CL100K_POSSESSIVE_PATTERN,
    FAMILIES,
    GPT4_HF_PATTERN,
    LLAMA3_CHAT_TEMPLATE,
    O200K_HF_PATTERN,
    QWEN2_HF_PATTERN,
    QWEN3_CHAT_TEMPLATE,
    VARIANTS,
    merges_all_splits,
    merges_from_ranks,
    ranks_and_specials,
    spell,
    tokenizer_document,
    write_tokenizer_json,
)
