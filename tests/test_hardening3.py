"""Saves that never lose or overwrite; bounded memory for rank files; special
tokens linear in the text; the remaining silent and unclear paths.

Memory is asserted as a bound (peak resident memory of a child process
against a multiple of the input's size); where a cost could be quadratic the
input is sized so that the quadratic cost would take hours, and a generous
subprocess timeout only guards against a hang. No time is asserted.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import pytest

import convpack
from convpack import ConversationError, DataGenerator, Tokenizer, VocabularyError
from convpack._atomic import AtomicFiles

SAVED = ("tokenizer.tiktoken", "convpack_tokenizer.json", "tokenizer.pkl", "token_bytes.pt")


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )


def _small_tokenizer() -> Tokenizer:
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"he"] = 256
    ranks[b"ll"] = 257
    return Tokenizer.from_ranks(ranks, special_tokens=convpack.CHAT_SPECIAL_TOKENS)


def _leftovers(directory) -> list:
    return sorted(n for n in os.listdir(directory) if n not in SAVED)


# ------------------------------------------------------------ saves


@pytest.mark.parametrize("name", SAVED)
def test_save_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path, name):
    pytest.importorskip("torch")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    directory = tmp_path / "tok"
    directory.mkdir()
    (directory / name).symlink_to(outside)
    tok = _small_tokenizer()
    tok.save(directory)
    assert outside.read_text() == "precious"
    assert not (directory / name).is_symlink() and (directory / name).is_file()
    back = Tokenizer.from_directory(directory)
    assert back.encode("hello <|bos|>", allowed_special="all") == tok.encode("hello <|bos|>", allowed_special="all")
    assert _leftovers(directory) == []


def test_save_does_not_follow_symlinks_at_the_old_predictable_temporary_names(tmp_path):
    pytest.importorskip("torch")
    directory = tmp_path / "tok"
    directory.mkdir()
    outsides = []
    for name in SAVED:
        outside = tmp_path / f"outside-{name}"
        outside.write_text("precious")
        outsides.append(outside)
        for guess in (f"{name}.tmp-{os.getpid()}", f"{name}.tmp"):
            (directory / guess).symlink_to(outside)
    _small_tokenizer().save(directory)
    assert [o.read_text() for o in outsides] == ["precious"] * len(SAVED)


def test_a_temporary_name_already_taken_is_never_followed(tmp_path, monkeypatch):
    # The first name drawn is taken by a symlink to a file outside: O_EXCL
    # with O_NOFOLLOW refuses it, and another name is drawn.
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    directory = tmp_path / "d"
    directory.mkdir()
    draws = iter(["a" * 32, "b" * 32])
    monkeypatch.setattr("convpack._atomic.secrets.token_hex", lambda n: next(draws))
    (directory / f".data.bin.{'a' * 32}.tmp").symlink_to(outside)
    with AtomicFiles(str(directory)) as files:
        files.write("data.bin", lambda f: f.write(b"new"))
        files.commit()
    assert outside.read_text() == "precious"
    assert (directory / "data.bin").read_bytes() == b"new"
    assert sorted(os.listdir(directory)) == sorted(["data.bin", f".data.bin.{'a' * 32}.tmp"])


def test_a_writer_that_fails_leaves_the_old_files_and_no_temporary_one(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "a").write_bytes(b"old a")
    (directory / "b").write_bytes(b"old b")

    def boom(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with AtomicFiles(str(directory)) as files:
            files.write("a", lambda f: f.write(b"new a"))
            files.write("b", boom)
            files.commit()
    assert (directory / "a").read_bytes() == b"old a"
    assert (directory / "b").read_bytes() == b"old b"
    assert sorted(os.listdir(directory)) == ["a", "b"]


def test_a_failed_save_leaves_the_previous_tokenizer_loadable(tmp_path, cl100k_path):
    # A full disk, simulated by a file-size limit in a child process: the
    # larger tokenizer's rank file cannot be written, the save raises, and the
    # directory still holds the smaller tokenizer, whole.
    directory = tmp_path / "tok"
    small = _small_tokenizer()
    small.save(directory, nanochat_files=False)
    before = {n: (directory / n).read_bytes() for n in os.listdir(directory)}
    result = _run(f"""
        import resource, signal
        import convpack
        big = convpack.Tokenizer.from_tiktoken_file({str(cl100k_path)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
        try:
            big.save({str(directory)!r}, nanochat_files=False)
        except OSError as e:
            print("OSError", e.errno)
        else:
            print("saved")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OSError"), result.stdout
    after = {n: (directory / n).read_bytes() for n in os.listdir(directory)}
    assert after == before  # nothing half-written, no temporary file left
    back = Tokenizer.from_directory(directory)
    text = "hello well <|user_start|> shell"
    assert back.encode(text, allowed_special="all") == small.encode(text, allowed_special="all")


def test_a_save_that_fails_in_nanochat_files_keeps_the_old_config(tmp_path, monkeypatch):
    # The ranks are staged before the pickle fails: neither is put in place.
    pytest.importorskip("tiktoken")
    directory = tmp_path / "tok"
    small = _small_tokenizer()
    small.save(directory, nanochat_files=False)
    before = {n: (directory / n).read_bytes() for n in os.listdir(directory)}
    big = Tokenizer.from_ranks({**{bytes([b]): b for b in range(256)}, b"ab": 256, b"abc": 257})

    def fail(tokenizer):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("convpack.interop._tokenizer_pkl_writer", fail)
    with pytest.raises(OSError):
        big.save(directory)
    assert {n: (directory / n).read_bytes() for n in os.listdir(directory)} == before


def test_saving_over_a_directory_name_is_refused_before_anything_moves(tmp_path):
    directory = tmp_path / "tok"
    small = _small_tokenizer()
    small.save(directory, nanochat_files=False)
    before = (directory / "tokenizer.tiktoken").read_bytes()
    (directory / "convpack_tokenizer.json").unlink()
    (directory / "convpack_tokenizer.json").mkdir()
    with pytest.raises(IsADirectoryError):
        Tokenizer.from_ranks({bytes([b]): b for b in range(256)}).save(directory, nanochat_files=False)
    assert (directory / "tokenizer.tiktoken").read_bytes() == before
    assert sorted(os.listdir(directory)) == ["convpack_tokenizer.json", "tokenizer.tiktoken"]


def test_hf_files_are_saved_atomically(tmp_path):
    pytest.importorskip("tokenizers")
    import hf_fixtures  # the suite's own tokenizer.json files

    source = tmp_path / "src"
    hf_fixtures.write_tokenizer_json("llama3", source)
    tok = Tokenizer.from_hf(source)
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    directory = tmp_path / "saved"
    directory.mkdir()
    (directory / "tokenizer.json").symlink_to(outside)
    tok.save(directory, nanochat_files=False)
    assert outside.read_text() == "precious"
    assert not (directory / "tokenizer.json").is_symlink()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (directory / name).read_bytes() == (source / name).read_bytes()
    assert Tokenizer.from_directory(directory).encode("hi there") == tok.encode("hi there")


# ------------------------------------------------------------ rank files


def _long_token_file(path, length: int) -> int:
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab' * (length // 2)).decode()} 256")
    path.write_text("\n".join(lines) + "\n")
    return path.stat().st_size


def test_a_long_token_costs_a_small_multiple_of_the_file(tmp_path):
    # One 10 MB token once cost about 165 bytes a byte (1.7 GB) and, with
    # 1 GiB of address space to spare, a 13 MB file died with SIGABRT. Under
    # that limit it must load, in a few times the file's size.
    path = tmp_path / "long.tiktoken"
    size = _long_token_file(path, 10_000_000)
    result = _run(f"""
        import resource
        import convpack
        def vm():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        limit = vm() + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tok = convpack.Tokenizer.from_tiktoken_file({str(path)!r}, special_tokens={{}})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert tok.encode("ab" * 5_000_000) == [256]
        print((after - before) * 1024)
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    grown = int(result.stdout.split()[-1])
    assert grown <= 6 * size, f"peak memory grew by {grown} bytes for a {size}-byte file"


def test_long_tokens_with_long_prefixes_match_tiktoken(tmp_path):
    pytest.importorskip("tiktoken")
    import tiktoken.load

    # Tokens a, aa, a*4, ... and a long one ending in b: every split found.
    path = tmp_path / "prefixes.tiktoken"
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    k, rank = 2, 256
    while k <= 5_000:
        lines.append(f"{base64.b64encode(b'a' * k).decode()} {rank}")
        lines.append(f"{base64.b64encode(b'b' + b'a' * k).decode()} {rank + 1}")
        k, rank = k * 2, rank + 2
    lines.append(f"{base64.b64encode(b'a' * 5_000 + b'b').decode()} {rank}")
    path.write_text("\n".join(lines) + "\n")
    ranks = tiktoken.load.load_tiktoken_bpe(str(path))
    oracle = tiktoken.Encoding("p", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    ours = Tokenizer.from_tiktoken_file(path, special_tokens={})
    rng = random.Random(3)
    for _ in range(50):
        text = "".join(rng.choice(["a" * rng.randint(1, 3000), "b", " ", "ba"]) for _ in range(6))
        assert ours.encode(text) == oracle.encode_ordinary(text)


# ------------------------------------------------------------ special tokens


def _many_specials(n: int, tiktoken_too: bool = False):
    ranks = {bytes([b]): b for b in range(256)}
    specials = {f"<|s{i}|>": 256 + i for i in range(n)}
    ours = Tokenizer.from_ranks(ranks, special_tokens=specials)
    if not tiktoken_too:
        return ours, specials
    import tiktoken

    oracle = tiktoken.Encoding("m", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    return ours, specials, oracle


def test_allowed_specials_match_tiktoken():
    pytest.importorskip("tiktoken")
    ours, specials, oracle = _many_specials(300, tiktoken_too=True)
    rng = random.Random(5)
    names = list(specials)
    texts = ["".join(rng.choice([*rng.sample(names, 3), " x", "<|", "|>", "s1"]) for _ in range(12))
             for _ in range(200)]
    for allowed in ("all", set(rng.sample(names, 100)), set()):
        for text in texts:
            try:
                want = oracle.encode(text, allowed_special=allowed, disallowed_special="all")
            except ValueError:
                with pytest.raises(ValueError, match="disallowed special token"):
                    ours.encode(text, allowed_special=allowed)
                with pytest.raises(ValueError, match="disallowed special token"):
                    ours.encode([text, "plain"], allowed_special=allowed)
                continue
            assert ours.encode(text, allowed_special=allowed) == want
        rows = [r for r in texts if not _raises(oracle, r, allowed)]
        assert ours.encode(rows, allowed_special=allowed) == [
            oracle.encode(r, allowed_special=allowed, disallowed_special="all") for r in rows
        ]


def _raises(oracle, text, allowed) -> bool:
    try:
        oracle.encode(text, allowed_special=allowed, disallowed_special="all")
    except ValueError:
        return True
    return False


def test_many_specials_cost_nothing_per_call():
    # 100,000 special tokens: at the old cost (the square of their number on
    # every call, 1.3 s for 20,000) these 400 calls would take days; the
    # timeout only guards against a hang.
    result = _run("""
        import convpack
        ranks = {bytes([b]): b for b in range(256)}
        specials = {f"<|s{i}|>": 256 + i for i in range(100_000)}
        tok = convpack.Tokenizer.from_ranks(ranks, special_tokens=specials)
        texts = [f"hi <|s{i * 97}|> there" for i in range(100)]
        for allowed in ("all", {f"<|s{i * 97}|>" for i in range(100)}, list(specials)):
            for t in texts:
                tok.encode(t, allowed_special="all")
            tok.encode(texts, allowed_special=allowed)
        assert tok.encode(texts[1], allowed_special="all")[3] == 256 + 97
        assert tok.decode([256 + 99_999] * 100_000) == "<|s99999|>" * 100_000
        print("ok")
    """, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


class _Encoding:
    """Pickles as tiktoken.Encoding with the given state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        import tiktoken

        return (tiktoken.Encoding, (), self.state)


def test_a_pickle_with_a_million_specials_is_refused_by_name(tmp_path):
    pytest.importorskip("tiktoken")
    assert convpack._core.MAX_SPECIAL_TOKENS == 1 << 17
    ranks = {bytes([b]): b for b in range(256)}
    state = {"name": "x", "pat_str": convpack.SPLIT_PATTERN, "mergeable_ranks": ranks,
             "special_tokens": {f"<|s{i}|>": 256 + i for i in range(10**6)}}
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(_Encoding(state)))
    with pytest.raises(VocabularyError, match=r"tokenizer.pkl: field 'special_tokens' has 1000000 entries, more than the 131072"):
        Tokenizer.from_directory(tmp_path)
    # The same bound for every source, at the bound itself accepted.
    with pytest.raises(ValueError, match="131073 special tokens is more than the 131072"):
        Tokenizer.from_ranks(ranks, special_tokens={f"<|s{i}|>": 256 + i for i in range((1 << 17) + 1)})
    assert len(Tokenizer.from_ranks(ranks, special_tokens=[f"<|s{i}|>" for i in range(1 << 17)]).special_tokens) == 1 << 17


# ------------------------------------------------------------ silent or unclear


@pytest.mark.parametrize("call", [
    lambda t: t.encode_to_numpy("héllo"),
    lambda t: t._core.encode_ordinary_batch("héllo", 1),
    lambda t: t._core.encode_batch("héllo", "all", 1),
    lambda t: Tokenizer.train_from_iterator("hello world", vocab_size=300),
])
def test_a_str_given_for_a_list_of_texts_is_a_type_error(call):
    tok = _small_tokenizer()
    with pytest.raises(TypeError, match="got one str"):
        call(tok)
    assert tok.encode_to_numpy(["héllo"])[1].tolist() == [0, len(tok.encode("héllo"))]


@pytest.mark.parametrize("pattern", ["", "(?!)", r"\p{L}+", r"[a-z ]+", r"\w+|\s+"])
def test_a_split_pattern_that_skips_text_is_refused(pattern):
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="does not match every character"):
        Tokenizer.from_ranks(ranks, pattern=pattern)
    assert Tokenizer.from_ranks(ranks, pattern=r"\S+|\s+").encode("a b") == [97, 32, 98]


class _Rows:
    """A dataset whose row 7 is None."""

    def __init__(self, n=20):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == 7:
            return None
        return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


@pytest.mark.parametrize("cache", [False, True])
def test_a_none_row_is_a_conversation_error(cache):
    pytest.importorskip("torch")
    tok = _small_tokenizer()
    gen = DataGenerator(_Rows(), tok, batch_size=4, mode="padded", device="cpu", cache=cache, prefetch=0)
    with pytest.raises(ConversationError, match="conversation 7") as info:
        for _ in range(5):
            next(gen)
    assert info.value.conversation_index == 7


@pytest.mark.parametrize("cache", [False, True])
def test_a_none_row_is_skipped_and_counted(cache):
    torch = pytest.importorskip("torch")
    tok = _small_tokenizer()
    gen = DataGenerator(_Rows(), tok, batch_size=19, mode="padded", device="cpu", cache=cache,
                        on_error="skip", prefetch=0)
    inputs, _ = next(gen)
    assert gen.skipped == 1
    seen = {tok.decode([int(x) for x in row if int(x) < 256]) for row in inputs}
    want = {f"q{i}a{i}" for i in range(20) if i != 7}
    assert seen == want
    assert isinstance(inputs, torch.Tensor)


@pytest.mark.parametrize("kwargs, name", [
    ({"world_size": 2**64}, "world_size"),
    ({"rank": 2**64, "world_size": 2}, "rank"),
    ({"num_iterations": 2**64}, "num_iterations"),
])
def test_huge_distributed_arguments_are_value_errors(kwargs, name):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=name):
        DataGenerator(_Rows(), _small_tokenizer(), batch_size=2, mode="padded", device="cpu", **kwargs)


def test_a_huge_cached_dataset_is_no_panic():
    pytest.importorskip("torch")

    class Huge(_Rows):
        def __len__(self):
            return 2**62

    # 4 bytes a conversation: past any budget, so nothing is cached (the
    # cache statistics say so); once a PanicException ("capacity overflow").
    gen = DataGenerator(Huge(), _small_tokenizer(), batch_size=2, mode="padded", device="cpu",
                        cache=True, prefetch=0)
    next(gen)
    assert gen.stats["cache"]["full"] is True
    # Within the budget but past any memory: a MemoryError naming the size.
    with pytest.raises(MemoryError, match="4611686018427387904 bytes"):
        DataGenerator(type("H", (_Rows,), {"__len__": lambda self: 2**60})(), _small_tokenizer(),
                      batch_size=2, mode="padded", device="cpu", cache=True, cache_bytes=2**63 - 1)


def test_saved_config_is_valid_json_and_lists_the_digests(tmp_path):
    pytest.importorskip("tiktoken")
    pytest.importorskip("torch")
    tok = _small_tokenizer()
    tok.save(tmp_path)
    config = json.loads((tmp_path / "convpack_tokenizer.json").read_text())
    import hashlib

    for name, digest in config["nanochat_files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
