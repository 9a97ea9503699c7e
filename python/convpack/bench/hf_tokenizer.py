"""Encode throughput on Hugging Face ``tokenizer.json`` files: convpack's
``Tokenizer.from_hf`` against the ``tokenizers`` library on the same file,
and against tiktoken where the ranks are tiktoken's (cl100k, o200k).

The files are built offline by ``convpack.bench.hf_files`` in the
families' published layouts (cl100k, o200k, Llama 3, Qwen 3); a family
whose ranks are not installed gets a note saying what to install. Text:
English prose, source code, multilingual translations and chat messages
(see ``convpack.bench.texts``). Cases, per family and text:

- one thread through Python: ``tokenizer.encode(doc)`` per document
  against ``tokenizers``' ``encode(doc, add_special_tokens=False).ids``,
  and against tiktoken's ``encode_ordinary(doc)`` (cl100k and o200k);
- a batch on every core: ``tokenizer.encode(docs, num_threads=N)`` against
  ``encode_batch_fast(docs, add_special_tokens=False)`` (its own thread
  pool, every core) with each encoding's ``.ids``: both sides return Python
  lists of ids;
- the fastest other exact encoders, when installed: quicktok (``quicktok-v1``
  ships every family's ranks) one thread per document
  (``encode_ordinary(doc)``, in the rounds above) and its flat batch
  (``encode_batch(docs, threads=N)``) against ``encode_to_numpy(docs,
  num_threads=N)``; fastokens on the same ``tokenizer.json``
  (``Tokenizer.from_file``), one thread per document (``encode(doc).ids``).
  Their ids are compared with ``tokenizers``' document by document first;
  one that differs is still timed and its row says on how many documents
  (quicktok's Llama 3 encoding, ranks without the file's merges list,
  differs on some multilingual documents).
  fastokens keeps what it has encoded (the same megabyte of English runs
  about 50x faster the second time) and offers no way to forget it, so
  every round builds it again, which takes seconds: it is timed in
  ``FASTOKENS_ROUNDS`` rounds of its own, against convpack timed again in
  those rounds, and not in a quick run.

The ids of every side are checked identical, document by document, before
anything is timed. Each round times every side once, one after the other,
each meeting the text as new: convpack with its piece cache emptied,
``tokenizers`` with its BPE word cache emptied (``model._clear_cache()``);
every side's tables stay warm; best of 5 rounds.
Throughput is MB/s of UTF-8 input; the ratio is convpack's over the other
side's.
"""

from __future__ import annotations

import os
from typing import Optional

from .common import check_identical, cold_cache, cpu_count, installed, interleaved, note, row
from .hf_files import FAMILIES, built_directory, family_available, ranks_and_specials
from .texts import CORPORA, corpus

__all__ = ["run", "TIKTOKEN_NAMES", "QUICKTOK_NAMES"]

SECTION = "hf_tokenizer"

#: The families whose ranks tiktoken has, by tiktoken's name.
TIKTOKEN_NAMES = {"cl100k": "cl100k_base", "o200k": "o200k_base"}
#: quicktok's encoding of each family.
QUICKTOK_NAMES = {
    "cl100k": "cl100k_base",
    "o200k": "o200k_base",
    "llama3": "llama3",
    "qwen3": "qwen3",
}
#: Rounds of the fastokens rows (each builds fastokens again).
FASTOKENS_ROUNDS = 2


def _tiktoken_twin(family: str):
    """A ``tiktoken.Encoding`` on the family's ranks and pattern (no specials)."""
    import tiktoken

    from .._encodings import NAMED_ENCODINGS

    ranks, _ = ranks_and_specials(family)
    name = TIKTOKEN_NAMES[family]
    return tiktoken.Encoding(
        f"bench-{name}",
        pat_str=NAMED_ENCODINGS[name].pattern,
        mergeable_ranks=ranks,
        special_tokens={},
    )


def run(quick: bool = False, families: tuple = FAMILIES, corpora: Optional[tuple] = None) -> list:
    """Time the cases above; one row per case (see ``convpack.bench``).

    Args:
        quick: small inputs and one round (a smoke run).
        families: which of ``hf_files.FAMILIES`` to time.
        corpora: which texts (names of ``texts.CORPORA``; default: all, or
            English alone in a quick run).

    Returns:
        The rows (MB/s, with ``family``, ``corpus`` and ``threads``), and a
        note row for each family that could not be built.

    Raises:
        BenchmarkMismatch: convpack's ids differ from ``tokenizers``' or
            tiktoken's.
    """
    try:
        import tokenizers
    except ModuleNotFoundError:
        return [
            note(SECTION, "not run: the tokenizers library is missing (pip install tokenizers)")
        ]
    import convpack

    total_chars = 30_000 if quick else 1_000_000
    repeats = 1 if quick else 5
    threads = cpu_count()
    rows: list = []
    if corpora is None:
        corpora = ("english",) if quick else tuple(CORPORA)
    texts = {name: corpus(name, total_chars) for name in corpora}
    for family in families:
        missing = family_available(family)
        if missing is not None:
            rows.append(note(SECTION, f"{family}: no rows: {missing}"))
            continue
        directory = built_directory(family)
        ours = convpack.Tokenizer.from_hf(directory)
        theirs = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        enc = _tiktoken_twin(family) if family in TIKTOKEN_NAMES else None
        peers = _Peers(family, os.path.join(directory, "tokenizer.json"), quick)
        rows += peers.notes
        for corpus_name, docs in texts.items():
            rows += _family_rows(
                family, corpus_name, docs, ours, theirs, enc, threads, repeats, not quick, peers
            )
    return rows


class _Peers:
    """The other exact encoders of one family's file that are installed."""

    def __init__(self, family: str, path: str, quick: bool) -> None:
        self.path = path
        self.notes: list = []
        self.quicktok = None
        self.fastokens = False
        if installed("quicktok"):
            import quicktok

            self.quicktok = quicktok.get_encoding(QUICKTOK_NAMES[family])
        else:
            self.notes.append(note(SECTION, f"{family}: no quicktok rows: pip install quicktok-v1"))
        if not installed("fastokens"):
            self.notes.append(note(SECTION, f"{family}: no fastokens rows: pip install fastokens"))
        elif quick:
            self.notes.append(
                note(
                    SECTION,
                    f"{family}: no fastokens rows in a quick run (each round builds it again)",
                )
            )
        else:
            self.fastokens = True

    def fresh_fastokens(self):
        """fastokens on the file, with nothing encoded yet."""
        import fastokens

        enc = fastokens.Tokenizer.from_file(self.path)
        # Its first call sets something up (as on the tiktoken ranks in the
        # peers section): not what a round times.
        enc.encode("a")
        return enc


def _differs(got: list, expected: list) -> int:
    return sum(list(g) != e for g, e in zip(got, expected))


def _peer_name(name: str, differs: int, docs: int) -> str:
    return f"{name} (ids differ on {differs} of {docs} docs)" if differs else name


def _family_rows(
    family, corpus_name, docs, ours, theirs, enc, threads, repeats, warmup, peers
) -> list:
    what = f"{family} tokenizer.json, {corpus_name} text"
    expected = [e.ids for e in theirs.encode_batch_fast(docs, add_special_tokens=False)]
    check_identical(
        what + " (tokenizers' encode)",
        [theirs.encode(d, add_special_tokens=False).ids for d in docs],
        expected,
    )
    check_identical(what, [ours.encode(d) for d in docs], expected)
    check_identical(what + " (batch)", ours.encode(docs, num_threads=threads), expected)
    if enc is not None:
        check_identical(what + " (tiktoken)", [enc.encode_ordinary(d) for d in docs], expected)
    flat, offsets = ours.encode_to_numpy(docs, num_threads=threads)
    check_identical(
        what + " (batch to numpy)",
        [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(docs))],
        expected,
    )
    qt = peers.quicktok
    differs = {}
    if qt is not None:
        differs["quicktok"] = _differs([qt.encode_ordinary(d) for d in docs], expected)
        q_flat, q_offsets = qt.encode_batch(docs, threads=threads)
        q_rows = [q_flat[q_offsets[i] : q_offsets[i + 1]].tolist() for i in range(len(docs))]
        differs["quicktok flat"] = _differs(q_rows, expected)
    if peers.fastokens:
        fresh = peers.fresh_fastokens()
        differs["fastokens"] = _differs([fresh.encode(d).ids for d in docs], expected)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6

    def ours_one():
        encode = cold_cache(ours).encode
        return lambda: [encode(d) for d in docs]

    def hf_one():
        encode = cold_cache(theirs).encode
        return lambda: [encode(d, add_special_tokens=False).ids for d in docs]

    def ours_batch():
        encode = cold_cache(ours).encode
        return lambda: encode(docs, num_threads=threads)

    def hf_batch():
        batch = cold_cache(theirs).encode_batch_fast
        return lambda: [e.ids for e in batch(docs, add_special_tokens=False)]

    def ours_flat():
        flat = cold_cache(ours).encode_to_numpy
        return lambda: flat(docs, num_threads=threads)

    makers = {"ours": ours_one, "tokenizers": hf_one}
    if enc is not None:
        makers["tiktoken"] = lambda: lambda: [enc.encode_ordinary(d) for d in docs]
    batch_makers = {"ours": ours_batch, "tokenizers": hf_batch}
    if qt is not None:
        makers["quicktok"] = lambda: lambda: [qt.encode_ordinary(d) for d in docs]
        batch_makers["ours flat"] = ours_flat
        batch_makers["quicktok flat"] = lambda: lambda: qt.encode_batch(docs, threads=threads)
    one = interleaved(makers, mb, repeats, warmup)
    batch = interleaved(batch_makers, mb, repeats, warmup)
    fast = None
    if peers.fastokens:

        def fastokens_one():
            encode = peers.fresh_fastokens().encode
            return lambda: [encode(d).ids for d in docs]

        fast = interleaved(
            {"ours": ours_one, "fastokens": fastokens_one}, mb, FASTOKENS_ROUNDS, False
        )
    info = {"family": family, "corpus": corpus_name}
    out = [
        row(
            SECTION,
            f"{what}, 1 thread",
            "MB/s",
            one["ours"],
            one["tokenizers"],
            "HF tokenizers encode",
            threads=1,
            **info,
        ),
    ]
    if enc is not None:
        out.append(
            row(
                SECTION,
                f"{what}, 1 thread, against tiktoken",
                "MB/s",
                one["ours"],
                one["tiktoken"],
                "tiktoken",
                threads=1,
                **info,
            )
        )
    out.append(
        row(
            SECTION,
            f"{what}, batch, {threads} threads",
            "MB/s",
            batch["ours"],
            batch["tokenizers"],
            "HF tokenizers encode_batch_fast",
            threads=threads,
            **info,
        )
    )

    def peer_row(case, ours_speed, speed, peer, name, key, threads_used):
        return row(
            SECTION,
            f"{what}, {case}",
            "MB/s",
            ours_speed,
            speed,
            _peer_name(name, differs[key], len(docs)),
            threads=threads_used,
            peer=peer,
            differs=differs[key],
            **info,
        )

    if qt is not None:
        out.append(
            peer_row(
                "1 thread, against quicktok",
                one["ours"],
                one["quicktok"],
                "quicktok",
                "quicktok",
                "quicktok",
                1,
            )
        )
        out.append(
            peer_row(
                f"batch to numpy, {threads} threads, against quicktok",
                batch["ours flat"],
                batch["quicktok flat"],
                "quicktok",
                "quicktok encode_batch",
                "quicktok flat",
                threads,
            )
        )
    if fast is not None:
        out.append(
            peer_row(
                "1 thread, against fastokens",
                fast["ours"],
                fast["fastokens"],
                "fastokens",
                "fastokens",
                "fastokens",
                1,
            )
        )
    return out
