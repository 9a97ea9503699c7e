"""Hostile input takes time linear in its size: each case is timed at n and
10n in the same run, and the ratio (10 when linear, 100 when quadratic) must
stay under a generous bound. No absolute time is asserted."""

from __future__ import annotations

import base64
import pickle
import time

import pytest
import tiktoken

import convpack
from convpack import Tokenizer, VocabularyError

BOUND = 30  # linear: about 10; quadratic: about 100


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _ratio(make, n: int) -> float:
    small, large = make(n), make(10 * n)
    small()  # warm caches
    return _best_time(large) / max(_best_time(small), 1e-6)


def test_many_special_tokens_encode_in_linear_time(tokenizer, tt_nano):
    text = "<|bos|>" * 20_000 + "hi<|user_start|>there"
    assert tokenizer.encode(text, allowed_special="all") == tt_nano.encode(text, allowed_special="all")

    def make(n):
        text = "<|bos|>" * n
        return lambda: tokenizer.encode(text, allowed_special="all")

    assert _ratio(make, 2_000) < BOUND


def test_disallowed_special_check_is_linear(tokenizer):
    def make(n):
        text = "<|bos|> x " * n + "<|user_start|>"

        def run():
            with pytest.raises(ValueError, match="user_start"):
                tokenizer.encode(text, allowed_special={"<|bos|>"})

        return run

    assert _ratio(make, 2_000) < BOUND


def _rank_file_with_long_token(tmp_path, length: int):
    path = tmp_path / f"long{length}.tiktoken"
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab' * (length // 2)).decode()} 256")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rank_file_with_a_long_token_loads_in_linear_time(tmp_path):
    path = _rank_file_with_long_token(tmp_path, 100_000)
    tok = Tokenizer.from_tiktoken_file(path, special_tokens={})
    assert tok.encode("ab" * 50_000) == [256]

    def make(n):
        path = _rank_file_with_long_token(tmp_path, n)
        return lambda: Tokenizer.from_tiktoken_file(path, special_tokens={})

    assert _ratio(make, 10_000) < BOUND


def test_long_tokens_with_long_prefixes_load_in_linear_time(tmp_path):
    # Tokens a, aa, a*4, a*8, ...: each long token's prefixes are tokens.
    def write(n):
        path = tmp_path / f"prefixes{n}.tiktoken"
        lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
        k, rank = 2, 256
        while k <= n:
            lines.append(f"{base64.b64encode(b'a' * k).decode()} {rank}")
            k, rank = k * 2, rank + 1
        lines.append(f"{base64.b64encode(b'a' * n + b'b').decode()} {rank}")
        path.write_text("\n".join(lines) + "\n")
        return path

    ranks = tiktoken.load.load_tiktoken_bpe(str(write(5_000)))
    oracle = tiktoken.Encoding("p", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    ours = Tokenizer.from_tiktoken_file(write(5_000), special_tokens={})
    text = "a" * 5_000 + "b" + " " + "a" * 777
    assert ours.encode(text) == oracle.encode_ordinary(text)

    def make(n):
        path = write(n)
        return lambda: Tokenizer.from_tiktoken_file(path, special_tokens={})

    assert _ratio(make, 10_000) < BOUND


class _Encoding:
    """Pickles as tiktoken.Encoding with the given state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (tiktoken.Encoding, (), self.state)


def test_self_sharing_pickle_fails_fast(tmp_path):
    # A list that holds itself twice, d levels deep: a few bytes per level,
    # 2**d elements to anyone who walks it (an error message once did).
    def make(depth):
        shared: list = []
        for _ in range(depth):
            shared = [shared, shared]
        state = {"pat_str": convpack.SPLIT_PATTERN, "mergeable_ranks": {b"a": shared}, "special_tokens": {}}
        directory = tmp_path / f"d{depth}"
        directory.mkdir(exist_ok=True)
        (directory / "tokenizer.pkl").write_bytes(pickle.dumps(_Encoding(state)))

        def run():
            with pytest.raises(VocabularyError, match="rank"):
                Tokenizer.from_directory(directory)

        return run

    assert _ratio(make, 6) < BOUND  # 60 levels: within the nesting limit
