"""Tokenizer.from_hf against the ``tokenizers`` library on the same file."""

from __future__ import annotations

import json
import os
import unicodedata

import corpus
import hf_fixtures
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convpack import NANOCHAT, Tokenizer, VocabularyError, _core
from convpack.hf import HfTokenizerError

pytest.importorskip("quicktok")
tokenizers = pytest.importorskip("tokenizers")

EDGE = [
    "1234567890",
    "12345678901234567890 1 12 123 1234",
    "a\u0301 e\u0301\u0301 \u0041\u030a \u1e0b\u0323",
    " " * 200 + "x" + "\n" * 50 + "\t \t" * 30,
    "x" + " " * 5000,
    "\U0001F468\u200D\U0001F469\u200D\U0001F467 \U0001F44D\U0001F3FD 🎉🎉🎉",
    "hi <|begin_of_text|> there<|im_end|>x <think>y</think>",
    "<|endoftext|>",
    "<|endoftext|><|endoftext|>a<|im_start|>user\nhello<|im_end|>",
    "x <|reserved_special_token_10|> y<|reserved_special_token_11|> <|reserved_special_token_11|> z",
    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "",
    "'s 'S 'll 'LL don't WON'T",
]


def texts() -> list:
    return corpus.corpus(1500) + EDGE


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    made = {}

    def get(family: str) -> str:
        if family not in made:
            d = tmp_path_factory.mktemp(family)
            hf_fixtures.write_tokenizer_json(family, d)
            made[family] = str(d)
        return made[family]

    return get


def pair(hf_dir, family):
    d = hf_dir(family)
    return Tokenizer.from_hf(d), tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))


def mismatches(ours, theirs, items) -> list:
    bad = []
    for t in items:
        want = theirs.encode(t, add_special_tokens=False).ids
        if ours.encode(t) != want:
            bad.append(t)
    return bad


@pytest.mark.parametrize("family", hf_fixtures.FAMILIES + hf_fixtures.VARIANTS)
def test_ids_equal_tokenizers(hf_dir, family):
    ours, theirs = pair(hf_dir, family)
    items = texts()
    bad = mismatches(ours, theirs, items)
    assert not bad, f"{len(bad)} of {len(items)} texts differ, e.g. {bad[0]!r}"
    # The batch path gives the same rows.
    want = [e.ids for e in theirs.encode_batch_fast(items, add_special_tokens=False)]
    assert ours.encode(items) == want
    # add_special_tokens=True applies the post-processor as tokenizers does.
    for t in EDGE[:4] + ["hello"]:
        assert ours.encode_hf(t, add_special_tokens=True) == theirs.encode(t).ids


@pytest.mark.parametrize("family", hf_fixtures.FAMILIES + hf_fixtures.VARIANTS)
def test_every_encode_path_gives_tokenizers_ids(hf_dir, family):
    # encode with prepend/append or allowed_special, encode_to_numpy and
    # encode_ordinary take tokenizers' ids too: added tokens in the text
    # become their ids (encode_ordinary keeps them as text) and the file's
    # normalizer applies (Qwen's NFC), never the core's bare ids.
    import numpy as np

    ours, theirs = pair(hf_dir, family)
    items = corpus.corpus(200) + EDGE
    want = [theirs.encode(t, add_special_tokens=False).ids for t in items]
    eot, special = min((i, t.content) for i, t in theirs.get_added_tokens_decoder().items() if t.special)
    for t, w in zip(items, want):
        assert ours.encode(t, prepend=eot, append=special) == [eot, *w, eot], t
    assert ours.encode(items, prepend=eot) == [[eot, *w] for w in want]
    # allowed_special only adds tiktoken's check: allowing all, the ids are
    # tokenizers'; a special token that is not allowed raises.
    assert ours.encode(items, allowed_special="all") == want
    assert [ours.encode(t, allowed_special="all") for t in items] == want
    with pytest.raises(ValueError, match="special"):
        ours.encode(f"a{special}b", allowed_special=set())
    for batch in (items, items[:40] + ["a\u0301"] + items[40:60], [t for t in items if t.isascii()]):
        flat, offsets = ours.encode_to_numpy(batch, num_threads=2)
        assert flat.dtype == np.uint32 and offsets.dtype == np.int64
        assert [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(batch))] == [
            theirs.encode(t, add_special_tokens=False).ids for t in batch
        ]
    with pytest.raises(TypeError, match="position 2"):
        ours.encode_to_numpy(["a\u0301", "b", 3])
    with pytest.raises(TypeError, match="one str"):
        ours.encode_to_numpy("a\u0301")
    # Without added tokens in the text, encode_ordinary is encode.
    plain = [t for t in items if "<|" not in t and "<think>" not in t and "</think>" not in t]
    assert any(not unicodedata.is_normalized("NFC", t) for t in plain)
    assert [ours.encode_ordinary(t) for t in plain] == [
        theirs.encode(t, add_special_tokens=False).ids for t in plain
    ]


def test_paths(hf_dir):
    # Which encoder each family runs on: by rank where the core proved the
    # merges equivalent (Qwen's one merge per token, and the tiktoken
    # conversions' every split of a token), by the list otherwise (Llama 3:
    # some of its tokens are not made of two tokens of lower id).
    for family in ("qwen3", "cl100k-one", "cl100k", "o200k"):
        assert not _core.hf_merges_by_list(Tokenizer.from_hf(hf_dir(family))._core), family
    assert _core.hf_merges_by_list(Tokenizer.from_hf(hf_dir("llama3"))._core)
    assert Tokenizer.from_hf(hf_dir("llama3")).pretokenizer == "fast:gpt4"
    assert Tokenizer.from_hf(hf_dir("qwen3")).pretokenizer == "fast:qwen2"
    assert Tokenizer.from_hf(hf_dir("o200k")).pretokenizer == "fast:o200k"


def _random_vocabulary(rng) -> list:
    """Single bytes, then tokens made by joining two earlier ones over a
    small alphabet (so tokens overlap and repeat), ids in order made."""
    alphabet = rng.choice([b"ab", b"abc"])
    toks = [bytes([b]) for b in range(256)]
    seen = set(toks)
    joinable = [bytes([c]) for c in alphabet]
    max_len = rng.randint(3, 10)
    for _ in range(2000):
        if len(toks) >= 256 + rng.randint(5, 60):
            break
        t = rng.choice(joinable) + rng.choice(joinable)
        if t not in seen and len(t) <= max_len:
            toks.append(t)
            seen.add(t)
            joinable.append(t)
    return toks


def test_random_vocabularies_match_tokenizers(tmp_path):
    # Vocabularies in the tiktoken-conversion layout (every split of a token
    # listed, in a random order within the token's merges), some with
    # ignore_merges: whichever encoder the load-time check picks, the ids
    # are tokenizers' ids.
    import random

    rng = random.Random(20261203)
    paths = {"rank": 0, "list": 0}
    for trial in range(150):
        toks = _random_vocabulary(rng)
        ids = {t: i for i, t in enumerate(toks)}
        merges = []
        for t in toks:
            local = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in ids and t[k:] in ids]
            rng.shuffle(local)
            merges += local
        doc = json.loads(json.dumps(hf_fixtures.tokenizer_document("cl100k-one")[0]))
        doc["added_tokens"] = []
        doc["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": "[a-c]+|[^a-c]+"}
        doc["model"]["ignore_merges"] = rng.random() < 0.5
        doc["model"]["vocab"] = {hf_fixtures.spell(t): i for i, t in enumerate(toks)}
        doc["model"]["merges"] = [[hf_fixtures.spell(a), hf_fixtures.spell(b)] for a, b in merges]
        path = tmp_path / f"{trial}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        theirs = tokenizers.Tokenizer.from_file(str(path))
        ours = Tokenizer.from_hf(path)
        paths["list" if _core.hf_merges_by_list(ours._core) else "rank"] += 1
        items = ["".join(rng.choice("abc") for _ in range(rng.choice([3, 12, 60, 300]))) for _ in range(60)]
        items.append(" ".join(items[:5]))
        want = [e.ids for e in theirs.encode_batch(items, add_special_tokens=False)]
        got = ours.encode(items)
        bad = [t for t, g, w in zip(items, got, want) if g != w]
        assert not bad, f"vocabulary {trial} ({paths}): {bad[0]!r}"
    # Both encoders were exercised.
    assert paths["rank"] > 20 and paths["list"] > 20, paths


def test_quicktok_agrees(hf_dir):
    import quicktok

    for family, name in (("llama3", "llama3"), ("cl100k-one", "cl100k_base")):
        ours = Tokenizer.from_hf(hf_dir(family))
        enc = quicktok.get_encoding(name)
        for t in corpus.corpus(300):
            assert ours.encode(t) == enc.encode_ordinary(t), t


def test_possessive_digits_follow_oniguruma(hf_dir):
    # tiktoken reads \p{N}{1,3}+ as possessive; Oniguruma as (\p{N}{1,3})+.
    ours, theirs = pair(hf_dir, "cl100k-possessive")
    ids = theirs.encode("1234567890", add_special_tokens=False).ids
    assert ours.encode("1234567890") == ids
    assert len(ids) == 4  # one piece of ten digits, merged: not "123" "456" ...
    tiktoken_style = Tokenizer.from_hf(hf_dir("cl100k-one")).encode("1234567890")
    assert tiktoken_style != ids or len(tiktoken_style) == len(ids)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_hypothesis_text(hf_dir, text):
    for family in ("llama3", "qwen3"):
        ours, theirs = _cached_pair(hf_dir, family)
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids, (family, text)


_PAIRS: dict = {}


def _cached_pair(hf_dir, family):
    if family not in _PAIRS:
        _PAIRS[family] = pair(hf_dir, family)
    return _PAIRS[family]


def test_roles_and_chat_template(hf_dir):
    llama = Tokenizer.from_hf(hf_dir("llama3"))
    assert llama.special_token_roles == {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    assert llama.chat_template == hf_fixtures.LLAMA3_CHAT_TEMPLATE
    qwen = Tokenizer.from_hf(os.path.join(hf_dir("qwen3"), "tokenizer.json"))
    assert qwen.special_token_roles == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert qwen.chat_template == hf_fixtures.QWEN3_CHAT_TEMPLATE  # the list's "default"
    # Each id's bytes: what decode and token_bytes give back for the text.
    text = "héllo <|im_end|> 世界"
    ids = qwen.encode(text)
    assert b"".join(qwen.token_bytes(i) for i in ids).decode("utf-8") == text
    assert qwen.decode(ids) == text


def test_save_round_trip(hf_dir, tmp_path):
    tok = Tokenizer.from_hf(hf_dir("llama3"))
    tok.save(tmp_path / "saved", nanochat_files=False)
    assert os.path.isfile(tmp_path / "saved" / "tokenizer.json")
    again = Tokenizer.from_directory(tmp_path / "saved")
    for t in EDGE:
        assert again.encode(t) == tok.encode(t)
    assert again.chat_template == tok.chat_template


def test_pickle_keeps_the_merges_list(hf_dir):
    import pickle

    tok = Tokenizer.from_hf(hf_dir("llama3-strip"))
    again = pickle.loads(pickle.dumps(tok))
    assert _core.hf_merges_by_list(again._core)
    for t in EDGE:
        assert again.encode(t) == tok.encode(t)


def test_nanochat_format_needs_its_specials(hf_dir):
    tok = Tokenizer.from_hf(hf_dir("qwen3"))
    conv = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    # The directory's chat template is the default; nanochat's format is
    # asked for by name.
    with pytest.raises(ValueError, match="chat template"):
        tok.render_conversation(conv, chat_format=NANOCHAT)


def _doc(hf_dir, family="qwen3"):
    with open(os.path.join(hf_dir(family), "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize(
    "change, component",
    [
        (lambda d: d["model"].update(type="Unigram"), "model"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer"),
        (lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "\u2581"}), "pre_tokenizer"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(invert=True), "Split"),
        (lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True), "add_prefix_space"),
        (lambda d: d.update(decoder={"type": "Metaspace"}), "decoder"),
    ],
)
def test_unsupported_components_are_refused(hf_dir, tmp_path, change, component):
    doc = _doc(hf_dir)
    change(doc)
    path = _written(tmp_path, doc)
    with pytest.raises(HfTokenizerError, match=component) as info:
        Tokenizer.from_hf(path)
    assert "supported are" in str(info.value)


def _written(tmp_path, doc: dict):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _small_doc(merges: list) -> dict:
    chars = [hf_fixtures.spell(bytes([b])) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({"ab": 256, "bc": 257, "abc": 258})
    return {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    }


def test_merge_list_disagreeing_with_ranks(tmp_path):
    # "abc" listed only as a + bc while "ab" has the lower id: by rank the
    # text "abc" would be [ab, c] -> abc; tokenizers never merges (ab, c).
    doc = _small_doc([["a", "b"], ["b", "c"], ["a", "bc"]])
    path = _written(tmp_path, doc)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    ours = Tokenizer.from_hf(path)
    assert _core.hf_merges_by_list(ours._core)
    by_rank = Tokenizer.from_ranks([bytes([b]) for b in range(256)] + [b"ab", b"bc", b"abc"], special_tokens=[])
    for t in ("abc", "abcabc", "xabcbc", "bcabc"):
        want = theirs.encode(t, add_special_tokens=False).ids
        assert ours.encode(t) == want
    assert by_rank.encode_ordinary("abc") != theirs.encode("abc", add_special_tokens=False).ids


def _with_added_bc(doc: dict) -> None:
    doc["added_tokens"] = [
        {"id": 257, "content": "bc", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
    ]


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda d: d["model"]["vocab"].update(zz="7"), VocabularyError, r"model.vocab\['zz'\] must be a non-negative"),
        (lambda d: d["model"]["vocab"].update(zz=-1), VocabularyError, r"model.vocab\['zz'\] must be a non-negative"),
        (lambda d: d["model"]["vocab"].update(zz=3.0), VocabularyError, r"model.vocab\['zz'\] must be a non-negative"),
        (lambda d: d["model"]["vocab"].update(zz=10**9), VocabularyError, "ids reach 1000000000 for 260 tokens"),
        (lambda d: d["model"]["vocab"].update(zz=10**30), VocabularyError, "ids reach 10{30} for 260 tokens"),
        (lambda d: d["model"]["vocab"].update({"a b": 259}), HfTokenizerError, "token 'a b', not spelled"),
        (lambda d: d["model"]["merges"].append("a b c"), VocabularyError, r"model.merges\[3\] 'a b c' is not a pair"),
        (lambda d: d["model"]["merges"].append("a  b"), VocabularyError, r"model.merges\[3\] 'a  b' is not a pair"),
        (lambda d: d["model"]["merges"].append(["a", "q q"]), VocabularyError, r"model.merges\[3\] .* is not a pair"),
        (lambda d: d["model"]["merges"].append(["a", 1]), VocabularyError, r"model.merges\[3\] .* is not a pair"),
        (lambda d: d["model"]["merges"].append(7), VocabularyError, r"model.merges\[3\] 7 is not a pair"),
        (lambda d: d["model"].update(merges={"a": "b"}), VocabularyError, "'model.merges' must be a list"),
        (lambda d: (_with_added_bc(d), d["model"]["merges"].append("a bc")), HfTokenizerError, "merge 3 'a bc' of an added token"),
    ],
)
def test_a_broken_vocabulary_or_merges_list_is_named(tmp_path, change, error, message):
    doc = _small_doc(["a b", "b c", "ab c"])
    change(doc)
    path = _written(tmp_path, doc)
    with pytest.raises(error, match=message):
        Tokenizer.from_hf(path)


def test_a_merge_that_makes_an_added_token_never_reaches_the_model(tmp_path):
    # "bc" is an added (special) token the model also has: tokenizers splits
    # it out of the text first, so the merge b + c is never applied, and
    # "abc" is a + bc's pieces as the model sees them: "a", then "bc" alone.
    doc = _small_doc(["a b", "b c", "ab c"])
    _with_added_bc(doc)
    path = _written(tmp_path, doc)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    ours = Tokenizer.from_hf(path)
    for t in ("abc", "bcbc", "abcab", "xbcx", "abbc"):
        assert ours.encode(t) == theirs.encode(t, add_special_tokens=False).ids, t


def test_datagen_with_nanochat_specials_missing_is_clear(hf_dir):
    tok = Tokenizer.from_hf(hf_dir("llama3"))
    with pytest.raises(ValueError, match="chat template"):
        tok.render_conversations([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
                                 chat_format=NANOCHAT)


# Texts a template's render must encode as the tokenizer.json does: Qwen's
# NFC ("a" + combining acute is one character after it), digit runs, and
# added-token text inside a message.
TEMPLATED = [
    [{"role": "user", "content": "cafe\u0301 1234567890?"},
     {"role": "assistant", "content": "Oui: a\u0301 \u00e9 \U0001F600"}],
    [{"role": "system", "content": "be terse"}, {"role": "user", "content": "x  \n\n  y"},
     {"role": "assistant", "content": "z<|im_end|> done"},
     {"role": "user", "content": "again\u0301"}, {"role": "assistant", "content": " ok "}],
]


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_directory_chat_template_renders_as_transformers(hf_dir, family):
    transformers = pytest.importorskip("transformers")
    d = hf_dir(family)
    tok = Tokenizer.from_hf(d)
    assert tok.chat_template
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(d)
    for messages in TEMPLATED:
        want = theirs.apply_chat_template(messages, tokenize=True)
        if hasattr(want, "keys"):  # transformers 5 returns a BatchEncoding
            want = want["input_ids"]
        ids, mask = tok.render_conversation({"messages": messages})
        assert ids == list(want)
        batch, _, offsets = tok.render_conversations([{"messages": messages}])
        assert batch[offsets[0]:offsets[1]].tolist() == ids
        # The trained tokens decode to the assistant texts (NFC for Qwen).
        trained = tok.decode([i for i, m in zip(ids, mask) if m])
        for m in messages:
            if m["role"] == "assistant":
                assert unicodedata.normalize("NFC", m["content"].strip()) in unicodedata.normalize("NFC", trained)


def test_code_points_below_u0300_are_nfc_so_the_core_skips_them():
    # The core reads a str for an NFC template as is when every byte of its
    # UTF-8 is below 0xCC (code points below U+0300), and asks unicodedata
    # otherwise: that holds only if none of those code points changes under
    # NFC, combines with a neighbour, or composes with one.
    below = [chr(c) for c in range(0x300)]
    assert all(unicodedata.combining(ch) == 0 for ch in below)
    assert all(unicodedata.normalize("NFC", ch) == ch for ch in below)
    assert all(max(ch.encode("utf-8")) < 0xCC for ch in below)
    assert chr(0x300).encode("utf-8")[0] == 0xCC
    pairs = [a + b for a in below[::7] for b in below[::11]]
    assert all(unicodedata.is_normalized("NFC", p) for p in pairs)


def test_nfc_template_render_normalises_every_str_and_leaves_the_callers_objects(hf_dir):
    # Qwen's tokenizer.json normalises to NFC: a conversation's strings
    # (content, extra fields, nested lists, tools) reach the template in NFC,
    # one by one, in a batch and in a DataGenerator, and the caller's objects
    # are not changed.
    import copy

    from convpack import ChatTemplate, DataGenerator

    def nfc(v):
        if isinstance(v, str):
            return unicodedata.normalize("NFC", v)
        if isinstance(v, dict):
            return {k: nfc(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(nfc(x) for x in v)
        return v

    tok = Tokenizer.from_hf(hf_dir("qwen3"))
    fmt = ChatTemplate(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for x in m.get('notes', []) %} [{{ x }}]{% endfor %}<|im_end|>\n{% endfor %}"
        "{% for t in tools or [] %}{{ t.name }}{% endfor %}",
        name="nfc probe",
    )
    odd = {"messages": [{"role": "user", "content": "cafe\u0301 A\u030a", "notes": ["a\u0301", "plain"]},
                        {"role": "assistant", "content": "e\u0301t\u00e9 \u1e0b\u0323"}],
           "tools": [{"name": "x\u0308"}]}
    before = copy.deepcopy(odd)
    want = tok.render_conversation(nfc(odd), chat_format=fmt)
    text = tok.decode(want[0])
    assert text.count("\u00e9") == 3 and "\u00e1" in text and "\u00eb" not in text
    assert unicodedata.is_normalized("NFC", text)
    assert tok.render_conversation(odd, chat_format=fmt) == want
    assert odd == before
    ids, mask, offsets = tok.render_conversations([odd, nfc(odd)], chat_format=fmt, num_threads=2)
    assert ids[: offsets[1]].tolist() == want[0] == ids[offsets[1]:].tolist()
    assert mask[: offsets[1]].tolist() == want[1]
    n = len(want[0])
    gen = DataGenerator([odd], tok, batch_size=1, seq_len=n + 8, mode="padded", chat_format=fmt)
    inputs, _targets = next(iter(gen))
    assert inputs[0, : n - 1].tolist() == want[0][:-1]
    assert odd == before
