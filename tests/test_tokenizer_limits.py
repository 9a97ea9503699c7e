"""Hostile and out-of-range tokenizer input: every size is checked before
memory is taken, files are read in bounded time and memory, and each bad
input gets a ValueError/TypeError subclass naming what is wrong, never an
abort, a hang or an OverflowError.

Cases that could take the process down run in a child interpreter under an
address-space limit and a timeout, so a regression fails the test instead
of the suite.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import pytest
import tiktoken

import convpack
from convpack import ConversationError, Tokenizer, VocabularyError
from convpack.errors import UnknownSpecialTokenError

BYTES = [bytes([b]) for b in range(256)]


def _run_limited(body: str, limit_mb: int = 1500, timeout: int = 120) -> subprocess.CompletedProcess:
    """Runs ``body`` in a fresh interpreter with its address space limited."""
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({limit_mb} << 20, {limit_mb} << 20))
        """
    ) + textwrap.dedent(body)
    env = {**os.environ, "RAYON_NUM_THREADS": "2"}
    try:
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s")


# ------------------------------------------------------------- special ids


@pytest.mark.parametrize("bad", [2**32 - 1, 2**32, 2**31, 2**64, -1])
def test_special_id_out_of_range_from_ranks(bad):
    with pytest.raises(ValueError, match=str(bad)):
        Tokenizer.from_ranks(BYTES, special_tokens={"<|x|>": bad})


@pytest.mark.parametrize("bad", [1.5, True, "7", None])
def test_special_id_of_wrong_type(bad):
    with pytest.raises(ValueError, match="<|x|>"):
        Tokenizer.from_ranks(BYTES, special_tokens={"<|x|>": bad})


def test_special_id_far_past_the_ranks_costs_no_memory():
    # Before: a Python int was made for every id up to the largest one
    # (a special id of 5*10**7 took 1.9 GB; near 2**32, an abort).
    out = _run_limited(
        """
        import convpack
        BYTES = [bytes([b]) for b in range(256)]
        for special in (5 * 10**7, 2**31 - 1):
            tok = convpack.Tokenizer.from_ranks(BYTES, special_tokens={"<|x|>": special})
            assert tok.get_vocab_size() == special + 1
            ids = tok.encode("a<|x|>b", allowed_special="all")
            assert ids == [97, special, 98], ids
            assert tok.decode(ids) == "a<|x|>b"
        print("ok")
        """,
        limit_mb=1200,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _nanochat_pickle(path, special_tokens, ranks=None):
    enc_state = {
        "name": "hostile",
        "pat_str": convpack.SPLIT_PATTERN,
        "mergeable_ranks": ranks if ranks is not None else {b: i for i, b in enumerate(BYTES)},
        "special_tokens": special_tokens,
    }
    # Pickled the way a tiktoken.Encoding is (the class, then its state),
    # with a state tiktoken itself would refuse to build.
    with open(path, "wb") as f:
        pickle.Pickler(f).dump(_Fake(enc_state))


class _Fake:
    """Pickles as tiktoken.Encoding with a chosen state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (tiktoken.Encoding, (), self.state)


@pytest.mark.parametrize("bad", [2**32 - 2, 2**32, 2**40])
def test_special_id_out_of_range_in_pickle(tmp_path, bad):
    _nanochat_pickle(tmp_path / "tokenizer.pkl", {"<|bos|>": bad})
    with pytest.raises(ValueError, match=str(bad)):
        Tokenizer.from_directory(tmp_path)


@pytest.mark.parametrize("bad", [2**32 - 2, 2**40, -3])
def test_special_id_out_of_range_in_config(tmp_path, bad):
    tok = Tokenizer.from_ranks(BYTES)
    tok.save(tmp_path)
    config_path = tmp_path / "convpack_tokenizer.json"
    config = json.loads(config_path.read_text())
    config["special_tokens"][0][1] = bad
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=str(bad)):
        Tokenizer.from_directory(tmp_path)


def test_huge_rank_in_rank_file(tmp_path):
    lines = [f"{__import__('base64').b64encode(b).decode()} {i}" for i, b in enumerate(BYTES)]
    lines.append(f"{__import__('base64').b64encode(b'xy').decode()} {2**32 - 1}")
    path = tmp_path / "v.tiktoken"
    path.write_text("\n".join(lines))
    with pytest.raises(VocabularyError, match="missing") as info:
        Tokenizer.from_tiktoken_file(path)
    assert info.value.line == 257
    lines[-1] = f"eHk= {2**32}"
    path.write_text("\n".join(lines))
    with pytest.raises(VocabularyError, match="not a non-negative integer"):
        Tokenizer.from_tiktoken_file(path)


def test_rank_file_with_a_hole_matches_tiktoken(tmp_path):
    # p50k_base leaves rank 50256 to <|endoftext|>; tiktoken accepts holes.
    ranks = {b: i for i, b in enumerate(BYTES)}
    ranks[b"ab"] = 257  # 256 is the hole
    ranks[b"abc"] = 258
    path = tmp_path / "holey.tiktoken"
    import base64

    path.write_text("".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in ranks.items()))
    specials = {"<|endoftext|>": 256}
    ours = Tokenizer.from_tiktoken_file(path, special_tokens=specials)
    oracle = tiktoken.Encoding("holey", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks,
                               special_tokens=specials)
    text = "abc ab abcabc<|endoftext|>ab"
    assert ours.encode(text, allowed_special="all") == oracle.encode(text, allowed_special="all")
    assert ours.mergeable_ranks == ranks
    assert ours.decode([258, 256, 257]) == "abc<|endoftext|>ab"
    with pytest.raises(ValueError, match="256"):
        Tokenizer.from_tiktoken_file(path, special_tokens={}).decode([256])
    ours.save(tmp_path / "saved")
    again = Tokenizer.from_directory(tmp_path / "saved")
    assert again.encode(text, allowed_special="all") == oracle.encode(text, allowed_special="all")


# ----------------------------------------------------------- hostile files


def _load_directory_limited(directory) -> subprocess.CompletedProcess:
    """``Tokenizer.from_directory(directory)`` in a fresh interpreter limited
    to 1000 MB; prints ``refused: <message>`` on a ``VocabularyError``."""
    return _run_limited(
        f"""
        import convpack
        try:
            convpack.Tokenizer.from_directory({str(directory)!r})
        except convpack.VocabularyError as e:
            print("refused:", e)
        """,
        limit_mb=1000,
    )


def test_tiny_pickle_claiming_two_gigabytes(tmp_path):
    # BINBYTES8 with a length of 2 GB: 9 bytes of file. The unpickler would
    # allocate the whole length before noticing the data is not there.
    (tmp_path / "tokenizer.pkl").write_bytes(b"\x8e" + struct.pack("<Q", 2**31))
    out = _load_directory_limited(tmp_path)
    assert out.returncode == 0 and "refused" in out.stdout, out.stderr[-2000:]


def test_pickle_with_huge_memo_index(tmp_path):
    # LONG_BINPUT 4294967295: five bytes that ask the unpickler for a memo
    # table of 2**32 slots.
    data = b"\x80\x04]r\xff\xff\xff\xff."
    (tmp_path / "tokenizer.pkl").write_bytes(data)
    out = _load_directory_limited(tmp_path)
    assert out.returncode == 0 and "refused" in out.stdout and "memo" in out.stdout, out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("name", ["tokenizer.pkl", "convpack_tokenizer.json"])
def test_fifo_is_refused_without_blocking(tmp_path, name):
    os.mkfifo(tmp_path / name)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import convpack
            try:
                convpack.Tokenizer.from_directory({str(tmp_path)!r})
            except convpack.VocabularyError as e:
                print("refused:", e)
            """)],
        capture_output=True, text=True, timeout=60,
    )
    assert "refused" in out.stdout and "not a regular file" in out.stdout, out.stderr[-2000:]


def test_fifo_and_directory_rank_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.tiktoken")
    with pytest.raises(VocabularyError, match="FIFO"):
        Tokenizer.from_tiktoken_file(tmp_path / "fifo.tiktoken")
    os.mkdir(tmp_path / "dir.tiktoken")
    with pytest.raises(VocabularyError, match="directory"):
        Tokenizer.from_tiktoken_file(tmp_path / "dir.tiktoken")
    with pytest.raises(VocabularyError, match="regular file"):
        Tokenizer.from_tiktoken_file("/dev/zero")
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_tiktoken_file(tmp_path / "missing.tiktoken")


def test_deeply_nested_pickle_is_refused(tmp_path):
    data = b"\x80\x04" + b"(" * 10_000 + b"l" * 10_000 + b"."
    (tmp_path / "tokenizer.pkl").write_bytes(data)
    with pytest.raises(VocabularyError, match="nest"):
        Tokenizer.from_directory(tmp_path)


def test_deeply_nested_config_is_refused(tmp_path):
    tok = Tokenizer.from_ranks(BYTES)
    tok.save(tmp_path)
    (tmp_path / "convpack_tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VocabularyError, match="convpack_tokenizer.json"):
        Tokenizer.from_directory(tmp_path)


def test_bad_ranks_in_pickle(tmp_path):
    ranks = {b: i for i, b in enumerate(BYTES)}
    ranks[b"zz"] = 10**9
    _nanochat_pickle(tmp_path / "tokenizer.pkl", {}, ranks)
    with pytest.raises(VocabularyError, match="ranks must be"):
        Tokenizer.from_directory(tmp_path)
    ranks[b"zz"] = True
    _nanochat_pickle(tmp_path / "tokenizer.pkl", {}, ranks)
    with pytest.raises(VocabularyError, match="ranks must be"):
        Tokenizer.from_directory(tmp_path)


# ------------------------------------------------------------------ render


def test_endless_iterator_raises_memory_error_not_abort(cl100k_path):
    out = _run_limited(
        f"""
        import itertools, convpack
        tok = convpack.Tokenizer.from_tiktoken_file({cl100k_path!r}, pattern=convpack.SPLIT_PATTERN,
                                                    special_tokens=convpack.CHAT_SPECIAL_TOKENS)
        text = "hello " * 20000
        conv = {{"messages": [{{"role": "user", "content": "hi"}}, {{"role": "assistant", "content": text}}]}}
        try:
            tok.render_conversations(itertools.repeat(conv), max_tokens=10**9)
        except MemoryError as e:
            print("memory error:", e)
        """,
        limit_mb=1200,
        timeout=300,
    )
    assert out.returncode == 0 and "memory error" in out.stdout, out.stdout + out.stderr[-2000:]


# ------------------------------------------------------------------ errors


def _conv(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def test_batch_error_names_the_first_bad_conversation(tokenizer):
    good = _conv(("user", "hi"), ("assistant", "yo"))
    rule_broken = _conv(("user", "hi"), ("user", "again"))  # found while rendering
    wrong_type = {"messages": [{"role": "user", "content": 5}]}  # found while reading
    for convs, first in [
        ([good, rule_broken, good, wrong_type], 1),
        ([good, good, wrong_type, rule_broken], 2),
        ([good] * 5000 + [rule_broken] + [good] * 10 + [wrong_type], 5000),
    ]:
        with pytest.raises(ConversationError) as info:
            tokenizer.render_conversations(convs)
        assert info.value.conversation_index == first
        assert f"conversation {first}" in str(info.value)


@pytest.mark.parametrize("bad", [2.5, True, float("inf"), float("nan"), "8", None])
def test_max_tokens_must_be_an_int(tokenizer, bad):
    conv = _conv(("user", "hi"), ("assistant", "yo"))
    for call in (tokenizer.render_conversation, tokenizer.render_for_completion,
                 tokenizer.render_conversations):
        arg = [conv] if call is tokenizer.render_conversations else conv
        with pytest.raises(TypeError, match="max_tokens"):
            call(arg, max_tokens=bad)


def test_max_tokens_too_large(tokenizer):
    conv = _conv(("user", "hi"), ("assistant", "yo"))
    with pytest.raises(ValueError, match="max_tokens"):
        tokenizer.render_conversation(conv, max_tokens=2**64)
    assert tokenizer.render_conversation(conv, max_tokens=2**62) == tokenizer.render_conversation(conv)


@pytest.mark.parametrize("bad, error", [(2.0, TypeError), (True, TypeError), (0, ValueError), (2**64, ValueError)])
def test_num_threads_checked(tokenizer, bad, error):
    with pytest.raises(error, match="num_threads"):
        tokenizer.encode(["a", "b"], num_threads=bad)


def test_surrogate_in_role(tokenizer):
    conv = {"messages": [{"role": "user", "content": "hi"}, {"role": "assi\ud800", "content": "x"}]}
    with pytest.raises(ConversationError, match="message 1") as info:
        tokenizer.render_conversation(conv)
    assert info.value.message_index == 1
    with pytest.raises(ConversationError) as info:
        tokenizer.render_conversations([_conv(("user", "a"), ("assistant", "b")), conv])
    assert info.value.conversation_index == 1 and info.value.message_index == 1


@pytest.mark.parametrize("bad", [10**12, 2**32, 2**64, -1, 2**200, -(2**70)])
def test_bad_ids_name_the_id(tokenizer, bad):
    for call in (tokenizer.decode, tokenizer.decode_bytes):
        with pytest.raises(ValueError, match=str(bad)) as info:
            call([1, 2, bad])
        assert "position 2" in str(info.value)
    for call in (tokenizer.token_bytes, tokenizer.id_to_token):
        with pytest.raises(ValueError, match=str(bad)):
            call(bad)


@pytest.mark.parametrize("bad", [1.0, "a", None, True])
def test_ids_of_wrong_type(tokenizer, bad):
    with pytest.raises(TypeError):
        tokenizer.decode([1, bad])
    with pytest.raises(TypeError):
        tokenizer.token_bytes(bad)


def test_numpy_ids_decode(tokenizer, tt_nano):
    import numpy as np

    ids = tt_nano.encode_ordinary("numpy ids")
    for dtype in (np.uint32, np.int64, np.uint64):
        assert tokenizer.decode(np.array(ids, dtype=dtype)) == "numpy ids"


def test_unknown_special_names(tokenizer):
    with pytest.raises(UnknownSpecialTokenError, match="<|nope|>") as info:
        tokenizer.encode_special("<|nope|>")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    assert info.value.name == "<|nope|>"
    with pytest.raises(UnknownSpecialTokenError, match="<|nope|>"):
        tokenizer.encode("x", prepend="<|nope|>")
    with pytest.raises(TypeError):
        tokenizer.encode_special(3)


@pytest.mark.parametrize("bad", [10**12, -1, 2**64, 100256 + 9])
def test_prepend_append_are_checked(tokenizer, bad):
    for kw in ("prepend", "append"):
        with pytest.raises(ValueError, match=kw):
            tokenizer.encode("x", **{kw: bad})
        with pytest.raises(ValueError, match=kw):
            tokenizer.encode(["x"], **{kw: bad})
    with pytest.raises(TypeError):
        tokenizer.encode("x", prepend=1.5)
    with pytest.raises(TypeError):
        tokenizer.encode("x", prepend=True)


def test_training_error_speaks_of_what_was_asked():
    with pytest.raises(ValueError) as info:
        Tokenizer.train_from_iterator([], vocab_size=300)
    message = str(info.value)
    assert "vocab_size=300" in message and "vocab_size 291" not in message
    assert "too few distinct pairs" in message
    with pytest.raises(TypeError, match="vocab_size"):
        Tokenizer.train_from_iterator(["abc"], vocab_size=300.0)


def test_nan_inf_not_overflow(tokenizer):
    assert math.isinf(float("inf"))
    with pytest.raises(TypeError):
        tokenizer.decode([float("inf")])
