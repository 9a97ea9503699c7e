"""Tokenizer parity with tiktoken (the oracle), round trips, training,
loading formats and corrupt files."""

from __future__ import annotations

import os
import pickle

import pytest
import tiktoken
from corpus import corpus
from hypothesis import given, settings
from hypothesis import strategies as st

import convpack
from convpack import CHAT_SPECIAL_TOKENS, CL100K_PATTERN, SPLIT_PATTERN, Tokenizer, VocabularyError

TEXTS = corpus(5000)


@pytest.fixture(scope="module")
def tt_cl100k(cl100k_ranks):
    return tiktoken.Encoding("cl100k-oracle", pat_str=CL100K_PATTERN, mergeable_ranks=cl100k_ranks, special_tokens={})


@pytest.fixture(scope="module")
def ours_cl100k(cl100k_path):
    return Tokenizer.from_tiktoken_file(cl100k_path, pattern=CL100K_PATTERN, special_tokens={})


def test_corpus_is_varied():
    assert len(TEXTS) >= 5000
    assert sum(len(t) >= 10_240 for t in TEXTS) >= 8
    assert any("\u0627" in t for t in TEXTS) and any("\u05E9" in t for t in TEXTS)
    assert any("\u200D" in t for t in TEXTS) and any("\r\n" in t for t in TEXTS)


def test_cl100k_pattern_matches_tiktoken(tt_cl100k, ours_cl100k):
    expected = tt_cl100k.encode_ordinary_batch(TEXTS)
    got = ours_cl100k.encode(TEXTS)
    mismatches = [(t[:60], e[:10], g[:10]) for t, e, g in zip(TEXTS, expected, got) if e != g]
    assert not mismatches, mismatches[:5]


def test_nanochat_pattern_matches_tiktoken(tt_nano, tokenizer):
    expected = tt_nano.encode_ordinary_batch(TEXTS)
    for num_threads in (1, 2, None):
        got = tokenizer.encode(TEXTS, num_threads=num_threads)
        mismatches = [(t[:60], e[:10], g[:10]) for t, e, g in zip(TEXTS, expected, got) if e != g]
        assert not mismatches, mismatches[:5]
    # single-string path too
    for t, e in zip(TEXTS[:500], expected[:500]):
        assert tokenizer.encode(t) == e


def test_a_batch_on_every_thread_names_its_first_bad_text(tokenizer):
    # Blocks of a batch become lists in the order they finish, not in the
    # order of the texts; the error raised must still be the first text's.
    texts = [f"text number {i}" for i in range(4000)]
    texts[900] = "one <|assistant_start|> here"
    texts[3100] = "one <|bos|> there"
    for num_threads in (1, 2, None):
        for _ in range(5):
            with pytest.raises(ValueError, match="assistant_start"):
                tokenizer.encode(texts, allowed_special=set(), num_threads=num_threads)
    texts[900] = "fine"
    rows = tokenizer.encode(texts, allowed_special={"<|bos|>"}, num_threads=2)
    assert rows[3100] == tokenizer.encode("one ") + [tokenizer.encode_special("<|bos|>")] + tokenizer.encode(" there")
    assert rows[:3100] == [tokenizer.encode(t) for t in texts[:3100]]


def test_round_trip(tokenizer):
    for t in TEXTS:
        assert tokenizer.decode(tokenizer.encode(t)) == t


def test_general_regex_fallback_matches_tiktoken(cl100k_ranks, cl100k_path):
    # A pattern outside the GPT-4 family exercises the general regex engine.
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    oracle = tiktoken.Encoding("r50k-like", pat_str=pattern, mergeable_ranks=cl100k_ranks, special_tokens={})
    ours = Tokenizer.from_tiktoken_file(cl100k_path, pattern=pattern, special_tokens={})
    sample = TEXTS[::10]
    assert ours.encode(sample) == oracle.encode_ordinary_batch(sample)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_unicode_matches_tiktoken(tt_nano, tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids == tt_nano.encode_ordinary(text)
    assert tokenizer.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab 'sS\u017f\n\r\t1234\u00a0.!\u4e2d\u0301")), max_size=40).map("".join))
def test_class_boundaries_match_tiktoken(tt_nano, tokenizer, text):
    assert tokenizer.encode(text) == tt_nano.encode_ordinary(text)


def test_lone_surrogates_are_replaced_like_tiktoken(tt_nano, tokenizer):
    for text in ["a\ud800b", "\udfff", "x\ud83d\ude00y", "\ud83dz"]:
        assert tokenizer.encode(text) == tt_nano.encode_ordinary(text)
        assert tokenizer.encode([text]) == [tt_nano.encode_ordinary(text)]


def test_specials_follow_tiktoken_rules(tt_nano, tokenizer):
    text = "hi <|bos|> there <|user_start|>x"
    # nanochat's encode treats special tokens' text as ordinary text
    assert tokenizer.encode(text) == tt_nano.encode_ordinary(text)
    assert tokenizer.encode(text, allowed_special="all") == tt_nano.encode(text, allowed_special="all")
    allowed = {"<|bos|>", "<|user_start|>"}
    assert tokenizer.encode(text, allowed_special=allowed) == tt_nano.encode(text, allowed_special=allowed)
    with pytest.raises(ValueError):
        tt_nano.encode(text, allowed_special={"<|bos|>"})
    with pytest.raises(ValueError, match="user_start"):
        tokenizer.encode(text, allowed_special={"<|bos|>"})


def test_nanochat_api(tokenizer, tt_nano, chat_specials):
    assert tokenizer.get_vocab_size() == tt_nano.n_vocab
    assert tokenizer.get_special_tokens() == set(CHAT_SPECIAL_TOKENS)
    assert tokenizer.get_bos_token_id() == chat_specials["<|bos|>"]
    for name, id in chat_specials.items():
        assert tokenizer.encode_special(name) == id
        assert tokenizer.id_to_token(id) == name
    with pytest.raises(KeyError):  # tiktoken's and nanochat's type, kept
        tokenizer.encode_special("<|nope|>")
    with pytest.raises(ValueError, match="nope"):
        tokenizer.encode_special("<|nope|>")
    bos = tokenizer.get_bos_token_id()
    ids = tokenizer.encode("hello", prepend="<|bos|>", append=bos)
    assert ids == [bos, *tt_nano.encode_ordinary("hello"), bos]
    rows = tokenizer.encode(["a b", "c"], prepend=bos)
    assert rows == [[bos, *tt_nano.encode_ordinary("a b")], [bos, *tt_nano.encode_ordinary("c")]]
    assert tokenizer.id_to_token(tt_nano.encode_ordinary(" hello")[0]) == " hello"
    with pytest.raises(TypeError):
        tokenizer.encode(42)
    with pytest.raises(ValueError):
        tokenizer.decode([10**9])
    assert tokenizer.decode_bytes(tt_nano.encode_ordinary("é")[:1]) == tt_nano.decode_bytes(tt_nano.encode_ordinary("é")[:1])


def test_id_lists_are_plain_lists_the_cycle_collector_skips(tokenizer, tt_nano):
    """Lists of ids hold only ints, so they are untracked by the cycle
    collector (its collections would walk every id); they stay ordinary,
    mutable lists freed by reference counting."""
    import gc
    import weakref

    conv = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "yo"}]}
    ids, mask = tokenizer.render_conversation(conv)
    outputs = [tokenizer.encode("hello world"), tokenizer.encode_ordinary("x y"), ids, mask,
               *tokenizer.encode(["a b", "c"])]
    for out in outputs:
        assert type(out) is list and not gc.is_tracked(out)
    words = tokenizer.encode("hello world")
    assert words == tt_nano.encode_ordinary("hello world")
    words.append(7)
    assert words[-1] == 7 and words[:-1] == tt_nano.encode_ordinary("hello world")

    # Freed by reference counting alone: an object only the list holds dies with it.
    class Marker:
        pass

    held = tokenizer.encode("hello")
    m = Marker()
    alive = weakref.ref(m)
    held.append(m)
    del m
    assert alive() is not None
    del held
    assert alive() is None


def _train_texts():
    return [t for t in TEXTS[:3000] if len(t) < 5000]


@pytest.fixture(scope="module")
def trained():
    return Tokenizer.train_from_iterator(iter(_train_texts()), vocab_size=600)


def test_trained_tokenizer(trained):
    assert trained.get_vocab_size() == 600
    ranks = trained.mergeable_ranks
    assert len(ranks) == 600 - len(CHAT_SPECIAL_TOKENS)
    assert all(bytes([b]) in ranks for b in range(256))
    oracle = tiktoken.Encoding(
        "trained", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=trained.special_tokens
    )
    sample = TEXTS[::7]
    assert trained.encode(sample) == oracle.encode_ordinary_batch(sample)
    for t in sample:
        assert trained.decode(trained.encode(t)) == t
    # merges learned from the data make common text shorter than raw bytes
    text = " ".join(_train_texts()[:50])
    assert len(trained.encode(text)) < 0.8 * len(text.encode())


def test_training_is_deterministic(trained):
    again = Tokenizer.train_from_iterator(_train_texts(), vocab_size=600)
    assert again.mergeable_ranks == trained.mergeable_ranks


def test_training_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train_from_iterator(["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="too few distinct pairs"):
        Tokenizer.train_from_iterator(["ab ab ab"], vocab_size=2000)


def test_save_and_load(tmp_path, trained):
    trained.save(tmp_path / "tok")
    again = Tokenizer.from_directory(tmp_path / "tok")
    assert again.mergeable_ranks == trained.mergeable_ranks
    assert again.special_tokens == trained.special_tokens
    assert again.pattern == trained.pattern
    assert again.encode(TEXTS[:200]) == trained.encode(TEXTS[:200])
    assert pickle.loads(pickle.dumps(trained)).encode(TEXTS[:50]) == trained.encode(TEXTS[:50])
    with pytest.raises(FileNotFoundError, match="tokenizer.pkl"):
        Tokenizer.from_directory(tmp_path)


def test_nanochat_pickle_loads(tmp_path, trained):
    enc = tiktoken.Encoding(
        name="rustbpe",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=trained.mergeable_ranks,
        special_tokens=trained.special_tokens,
    )
    with open(tmp_path / "tokenizer.pkl", "wb") as f:
        pickle.dump(enc, f)
    loaded = Tokenizer.from_directory(tmp_path)
    sample = TEXTS[::11]
    assert loaded.encode(sample) == enc.encode_ordinary_batch(sample)
    assert loaded.get_bos_token_id() == enc.encode_single_token("<|bos|>")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "tokenizer.pkl", "wb") as f:
        pickle.dump(_Evil(marker), f)
    with pytest.raises(VocabularyError, match="refusing to load global"):
        Tokenizer.from_directory(tmp_path)
    assert not marker.exists()
    # an Encoding-shaped pickle smuggling a call inside its state is refused too
    with open(tmp_path / "tokenizer.pkl", "wb") as f:
        pickle.dump({"mergeable_ranks": _Evil(marker)}, f)
    with pytest.raises(VocabularyError):
        Tokenizer.from_directory(tmp_path)
    assert not marker.exists()
    (tmp_path / "tokenizer.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(VocabularyError, match="tokenizer.pkl"):
        Tokenizer.from_directory(tmp_path)


GOOD = ["IQ== 0", "Ig== 1", "Iw== 2"]


@pytest.mark.parametrize(
    "lines, line, fragment",
    [
        ([], 0, "empty"),
        (["IQ== 0", "Ig=x 1"], 2, "base64"),
        (["IQ== 0", "Iw== 2000"], 2, "1999 of the ranks 0..2000 missing"),
        (["IQ== 0", "Ig== 0"], 2, "rank 0 was already given on line 1"),
        (["IQ== 0", "IQ== 1"], 2, "already given on line 1"),
        (["IQ== 0", "Ig=="], 2, "truncated"),
        (["IQ== 0", "Ig== one"], 2, "not a non-negative integer"),
        ([*GOOD, "I"], 4, "no rank"),
    ],
)
def test_corrupt_rank_files(tmp_path, lines, line, fragment):
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(lines))
    with pytest.raises(VocabularyError, match=fragment) as info:
        Tokenizer.from_tiktoken_file(path)
    assert info.value.file == str(path)
    assert info.value.line == line
    assert str(path) in str(info.value)


def test_rank_file_missing_bytes(tmp_path):
    path = tmp_path / "small.tiktoken"
    path.write_text("\n".join(GOOD) + "\n")
    with pytest.raises(ValueError, match="single byte"):
        Tokenizer.from_tiktoken_file(path)


def test_version_and_exports():
    assert isinstance(convpack.__version__, str)
    assert convpack.SPLIT_PATTERN.count(r"\p{N}{1,2}") == 1
    assert len(CHAT_SPECIAL_TOKENS) == 9 and CHAT_SPECIAL_TOKENS[0] == "<|bos|>"


def test_every_public_name_is_documented():
    for name in dir(Tokenizer):
        if name.startswith("_"):
            continue
        doc = getattr(Tokenizer, name).__doc__
        assert doc and len(doc.strip()) > 20, name
        member = Tokenizer.__dict__.get(name)
        if callable(getattr(Tokenizer, name)) and not isinstance(member, property):
            # a method says what it returns or raises (or writes, for save)
            assert any(word in doc for word in ("Returns", "Raises")), name


def test_encode_to_numpy_matches_tiktoken(tokenizer, tt_nano):
    import numpy as np

    texts = TEXTS[:400]
    expected = tt_nano.encode_ordinary_batch(texts)
    for num_threads in (1, None):
        ids, offsets = tokenizer.encode_to_numpy(texts, num_threads=num_threads)
        assert ids.dtype == np.uint32 and offsets.dtype == np.int64
        assert offsets.tolist()[0] == 0 and len(offsets) == len(texts) + 1
        assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))] == expected
    ids, offsets = tokenizer.encode_to_numpy([])
    assert len(ids) == 0 and offsets.tolist() == [0]
    with pytest.raises(TypeError, match="position 1"):
        tokenizer.encode_to_numpy(["a", 3])
