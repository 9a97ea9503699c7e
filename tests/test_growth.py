"""Hostile input costs time linear in its size. Each case runs at a size
where a quadratic cost would take hours (noted per case) and checks the
result; it runs in a child process whose timeout, far above the linear
cost, only guards the suite against a hang. No time is measured.
"""

from __future__ import annotations

import base64
import pickle
import subprocess
import sys
import textwrap

import pytest
import tiktoken
import tiktoken.load

import convpack
from convpack import Tokenizer

HANG_GUARD = 600  # seconds; the linear cost of each case is well under one


def _in_child(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=HANG_GUARD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_many_special_tokens_in_one_text(tokenizer, tt_nano, cl100k_path):
    text = "<|bos|>" * 20_000 + "hi<|user_start|>there"
    assert tokenizer.encode(text, allowed_special="all") == tt_nano.encode(text, allowed_special="all")
    # 2,000,000 specials in one text: quadratic in them, about 4 * 10**12 steps.
    out = _in_child(f"""
        import convpack
        tok = convpack.Tokenizer.from_tiktoken_file({cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
                                                     special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        ids = tok.encode("<|bos|>" * 2_000_000, allowed_special="all")
        print(len(ids), set(ids) == {{tok.get_bos_token_id()}})
    """)
    assert out.split() == ["2000000", "True"]


def test_disallowed_special_check_on_a_long_text(tokenizer, cl100k_path):
    with pytest.raises(ValueError, match="user_start"):
        tokenizer.encode("<|bos|> x " * 100 + "<|user_start|>", allowed_special={"<|bos|>"})
    # 1,000,000 allowed specials before the disallowed one: a rescan per
    # match would be about 10**12 steps.
    out = _in_child(f"""
        import convpack
        tok = convpack.Tokenizer.from_tiktoken_file({cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
                                                     special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        try:
            tok.encode("<|bos|> x " * 1_000_000 + "<|user_start|>", allowed_special={{"<|bos|>"}})
        except ValueError as e:
            print("refused", "user_start" in str(e))
    """)
    assert out.split() == ["refused", "True"]


def _rank_file_with_long_token(path, length: int) -> None:
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab' * (length // 2)).decode()} 256")
    path.write_text("\n".join(lines) + "\n")


def test_rank_file_with_a_long_token(tmp_path):
    # One token of 20,000,000 bytes: every split tried by hashing would be
    # about 2 * 10**14 byte reads.
    path = tmp_path / "long.tiktoken"
    _rank_file_with_long_token(path, 20_000_000)
    out = _in_child(f"""
        import convpack
        tok = convpack.Tokenizer.from_tiktoken_file({str(path)!r}, special_tokens={{}})
        print(tok.encode("ab" * 10_000_000) == [256], tok.encode("ab" * 1000) != [256])
    """)
    assert out.split() == ["True", "True"]


def _prefix_file(path, n: int) -> None:
    # Tokens a, aa, a*4, a*8, ...: each long token's prefixes are tokens.
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    k, rank = 2, 256
    while k <= n:
        lines.append(f"{base64.b64encode(b'a' * k).decode()} {rank}")
        k, rank = k * 2, rank + 1
    lines.append(f"{base64.b64encode(b'a' * n + b'b').decode()} {rank}")
    path.write_text("\n".join(lines) + "\n")


def test_long_tokens_with_long_prefixes(tmp_path):
    small = tmp_path / "prefixes-small.tiktoken"
    _prefix_file(small, 5_000)
    ranks = tiktoken.load.load_tiktoken_bpe(str(small))
    oracle = tiktoken.Encoding("p", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    ours = Tokenizer.from_tiktoken_file(small, special_tokens={})
    text = "a" * 5_000 + "b" + " " + "a" * 777
    assert ours.encode(text) == oracle.encode_ordinary(text)
    # Tokens of up to 8,000,000 bytes whose prefixes are tokens: comparing
    # each split's prefix anew would be about 3 * 10**13 byte reads.
    large = tmp_path / "prefixes-large.tiktoken"
    _prefix_file(large, 8_000_000)
    out = _in_child(f"""
        import convpack
        tok = convpack.Tokenizer.from_tiktoken_file({str(large)!r}, special_tokens={{}})
        print(len(tok.encode("a" * 8_000_000 + "b")))
    """)
    assert out.split() == ["1"]


class _Encoding:
    """Pickles as tiktoken.Encoding with the given state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (tiktoken.Encoding, (), self.state)


def test_self_sharing_pickle_fails_fast(tmp_path):
    # A list that holds itself twice, 60 levels deep (within the nesting
    # limit): a few bytes per level, 2**60 elements to anyone who walks it
    # (an error message once did), which would never finish.
    shared: list = []
    for _ in range(60):
        shared = [shared, shared]
    state = {"pat_str": convpack.SPLIT_PATTERN, "mergeable_ranks": {b"a": shared}, "special_tokens": {}}
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(_Encoding(state)))
    out = _in_child(f"""
        import convpack
        try:
            convpack.Tokenizer.from_directory({str(tmp_path)!r})
        except convpack.VocabularyError as e:
            print("refused", "rank" in str(e))
    """)
    assert out.split() == ["refused", "True"]
