"""Batch throughput: ``convpack.DataGenerator`` against the pure-Python
generators, end to end (conversations in, tensors out).

The baselines are ``convpack.bench.baseline``'s ``padded_batches`` (nanochat's
SFT collate), ``stream_batches`` (mid-training) and ``bestfit_batches``
(BOS-aligned best fit, ``overflow`` ``"pad"`` and ``"crop"``), each rendering
every conversation as it reads it with ``PythonRenderer`` over tiktoken
(cl100k_base ranks, nanochat's split pattern, the chat special tokens).
Both sides read the same SmolTalk-like conversations (about 4.7 messages of
about 845 characters, ``convpack.bench.texts``) on the CPU.

Before anything is timed, every batch a case times is checked identical
between convpack (on 1 thread and on every core) and the baseline: dtype,
shape and values of ``inputs`` and ``targets``.

Cases per mode, in tokens/s (``inputs.numel()`` per batch, the same on both
sides), with ``prefetch=0`` so the batches are made in the timed call:

- ``num_threads=1`` and ``num_threads=N`` (every core);
- the same with ``prefetch=2``, the default, where two more batches'
  worth of conversations are kept rendering in the background while the
  consumer takes this one (the consumer here does nothing with a batch, so
  this measures what the deeper read-ahead costs or saves on its own). The
  chunks read ahead render one after another on the generator's
  ``num_threads``, so ``num_threads=1, prefetch=2`` still renders on one
  thread; what it gains is reading and packing while that thread renders.

``varlen`` has no nanochat equivalent: its tokens/s are reported alone (no
baseline, no ratio).

"Render cache" rows: ``bestfit`` on 1 thread with ``cache=True``; the
first epoch reads and renders every conversation (and caches it), later
epochs only pack. Tokens/s of epoch 2 against epoch 1 of the same
generator (the ratio is epoch 2 / epoch 1); epoch 2's batches are first
checked identical to those of a generator without the cache.

"Packer alone" rows exclude rendering: the Rust packer is handed already
rendered conversations (``Packer.push`` outside the timing) and only its
``plan`` + ``write`` calls, which lay out each batch and write it into numpy
buffers, are timed, Python call overhead included. The baseline is the same
pure-Python generator over the same already rendered ids. The unit is GB/s
of batch written (inputs + targets; ``varlen`` adds ``cu_seqlens`` and
``position_ids``).

Each timed round builds its generator with convpack's piece cache emptied
(the text is new to it); construction is outside the timing.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator

from .baseline import PythonRenderer, bestfit_batches, padded_batches, stream_batches
from .common import BenchmarkMismatch, cl100k_path, cold_cache, cpu_count, row, tiktoken_twin
from .texts import smoltalk_like_conversations

__all__ = ["run", "settings", "MODES"]

SECTION = "datagen"
BASELINE_NAME = "pure Python"
# (mode, overflow) timed against a baseline; varlen is timed alone.
MODES = (("padded", "pad"), ("stream", "pad"), ("bestfit", "pad"), ("bestfit", "crop"))
BUFFER_SIZE = 100


def settings(quick: bool, **overrides: int) -> dict:
    """Sizes of the benchmark: ``conversations``, ``batch_size``,
    ``seq_len``, ``batches`` per timed pass and ``repeats`` (rounds; the
    best counts), each replaced by ``overrides`` when given (not None)."""
    if quick:
        s = dict(conversations=120, batch_size=4, seq_len=512, batches=6, repeats=1)
    else:
        s = dict(conversations=2000, batch_size=8, seq_len=2048, batches=100, repeats=3)
    for key, value in overrides.items():
        if key not in s:
            raise TypeError(f"unknown setting {key!r} (one of {', '.join(s)})")
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
            s[key] = value
    return s


def _label(mode: str, overflow: str) -> str:
    return f"bestfit/{overflow}" if mode == "bestfit" else mode


def _take(batches: Iterator, n: int) -> list:
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == n:
            return out
    return out


def _check(what: str, ours: list, baseline: list) -> None:
    """Raise ``BenchmarkMismatch`` unless both lists of batches are equal
    tensor for tensor (dtype, shape, values)."""
    import torch

    if len(ours) != len(baseline):
        raise BenchmarkMismatch(
            f"{what}: {len(ours)} batches from convpack, {len(baseline)} from the baseline"
        )
    for i, (a, b) in enumerate(zip(ours, baseline)):
        if len(a) != len(b):
            raise BenchmarkMismatch(f"{what}: batch {i} has {len(a)} tensors, baseline {len(b)}")
        for name, x, y in zip(("inputs", "targets"), a, b):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                raise BenchmarkMismatch(
                    f"{what}: batch {i} {name} differ between convpack and the baseline "
                    f"({x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)})"
                )


def _best(makers: dict, repeats: int) -> dict:
    """Best seconds of each timed callable over ``repeats`` rounds; in every
    round each ``makers[name]()`` is built outside the timing and its result
    timed, one after the other, so all see the same machine load."""
    best = {name: float("inf") for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            timed, cleanup = make()
            try:
                start = time.perf_counter()
                timed()
                best[name] = min(best[name], time.perf_counter() - start)
            finally:
                cleanup()
    return best


def _no_cleanup() -> None:
    return None


# ------------------------------------------------------------- end to end


def _generator(convs, tokenizer, s, mode, overflow, threads, prefetch):
    import convpack

    return convpack.DataGenerator(
        convs,
        tokenizer,
        batch_size=s["batch_size"],
        seq_len=None if mode == "padded" else s["seq_len"],
        mode=mode,
        overflow=overflow,
        buffer_size=BUFFER_SIZE,
        device="cpu",
        rank=0,
        world_size=1,
        prefetch=prefetch,
        num_threads=threads,
    )


def _baseline(convs, render: Callable, s, mode, overflow, bos, pad) -> Iterator:
    b, t = s["batch_size"], s["seq_len"]
    if mode == "padded":
        return padded_batches(convs, render, b, pad)
    if mode == "stream":
        return stream_batches(convs, render, b, t)
    return bestfit_batches(convs, render, b, t, bos, buffer_size=BUFFER_SIZE, overflow=overflow)


def _end_to_end(convs, tokenizer, python, s, threads) -> list:
    bos = tokenizer.get_bos_token_id()
    pad = tokenizer.encode_special("<|assistant_end|>")
    n = s["batches"]
    variants = [
        (f"{t} thread{'s' if t > 1 else ''}{', prefetch=2' if prefetch else ''}", t, prefetch)
        for t in sorted({1, threads})
        for prefetch in (0, 2)
    ]
    rows = []
    for mode, overflow in MODES:
        label = _label(mode, overflow)
        expected = _take(
            _baseline(convs, python.render_conversation, s, mode, overflow, bos, pad), n
        )
        for t in sorted({1, threads}):
            gen = _generator(convs, tokenizer, s, mode, overflow, t, 0)
            try:
                got = _take(gen, n)
            finally:
                gen.close()
            _check(f"DataGenerator {label}, {t} threads", got, expected)
        tokens = sum(batch[0].numel() for batch in expected)

        def ours(t, prefetch, mode=mode, overflow=overflow):
            gen = _generator(convs, cold_cache(tokenizer), s, mode, overflow, t, prefetch)
            return (lambda: _take(gen, n)), gen.close

        def baseline(mode=mode, overflow=overflow):
            render = python.render_conversation
            return (
                lambda: _take(_baseline(convs, render, s, mode, overflow, bos, pad), n)
            ), _no_cleanup

        makers: dict = {"baseline": baseline}
        for name, t, prefetch in variants:
            makers[name] = lambda t=t, prefetch=prefetch: ours(t, prefetch)
        baseline()[0]()  # warm-up
        best = _best(makers, s["repeats"])
        for name, t, prefetch in variants:
            rows.append(
                row(
                    SECTION,
                    f"{label}, {name}",
                    "tokens/s",
                    tokens / best[name],
                    tokens / best["baseline"],
                    BASELINE_NAME,
                    mode=mode,
                    overflow=overflow if mode == "bestfit" else None,
                    threads=t,
                    prefetch=prefetch,
                    batch_size=s["batch_size"],
                    seq_len=None if mode == "padded" else s["seq_len"],
                    batches=n,
                )
            )
    return rows


def _varlen(convs, tokenizer, s, threads) -> list:
    """varlen's tokens/s alone: no nanochat generator makes these batches."""
    n = s["batches"]
    rows = []
    for t in sorted({1, threads}):

        def make(t=t):
            gen = _generator(convs, cold_cache(tokenizer), s, "varlen", "pad", t, 0)
            return (lambda: _take(gen, n)), gen.close

        gen = _generator(convs, tokenizer, s, "varlen", "pad", t, 0)
        try:
            tokens = sum(batch[0].numel() for batch in _take(gen, n))
        finally:
            gen.close()
        best = _best({"ours": make}, s["repeats"])
        rows.append(
            {
                "section": SECTION,
                "case": f"varlen, {t} thread{'s' if t > 1 else ''} (no nanochat equivalent)",
                "unit": "tokens/s",
                "ours": tokens / best["ours"],
                "mode": "varlen",
                "threads": t,
                "prefetch": 0,
                "batch_size": s["batch_size"],
                "seq_len": s["seq_len"],
                "batches": n,
            }
        )
    return rows


# ----------------------------------------------------------- render cache


def _cache_epochs(convs, tokenizer, s) -> list:
    """Epoch 2 (packing from the cache) against epoch 1 (reading and
    rendering), ``bestfit`` on one thread."""
    import convpack

    def make(cache):
        return convpack.DataGenerator(
            convs, cold_cache(tokenizer), batch_size=s["batch_size"], seq_len=s["seq_len"],
            mode="bestfit", buffer_size=BUFFER_SIZE, device="cpu", rank=0, world_size=1,
            prefetch=0, num_threads=1, cache=cache)

    # Batches of one epoch (the same with and without the cache).
    probe = make(False)
    per_epoch = 0
    while not probe.last_step:
        next(probe)
        per_epoch += 1
    check = [next(probe) for _ in range(per_epoch)]
    best = {1: float("inf"), 2: float("inf")}
    tokens = {1: 0, 2: 0}
    for _ in range(s["repeats"]):
        gen = make(True)
        for epoch in (1, 2):
            start = time.perf_counter()
            batches = [next(gen) for _ in range(per_epoch)]
            best[epoch] = min(best[epoch], time.perf_counter() - start)
            tokens[epoch] = sum(b[0].numel() for b in batches)
        _check("DataGenerator bestfit, cache, epoch 2", batches, check)
    return [
        row(
            SECTION,
            "render cache: bestfit/pad, 1 thread, epoch 2 (cached) vs epoch 1",
            "tokens/s",
            tokens[2] / best[2],
            tokens[1] / best[1],
            "epoch 1 (read + render)",
            mode="bestfit",
            threads=1,
            prefetch=0,
            batch_size=s["batch_size"],
            seq_len=s["seq_len"],
            batches=per_epoch,
            cache=True,
        )
    ]


# ----------------------------------------------------------- packer alone


def _packer(tokenizer, s, mode, overflow, n_convs, threads):
    """A Rust packer holding ``n_convs`` already rendered conversations
    (the dataset's order, one epoch)."""
    from convpack import _core

    seq_len = None if mode == "padded" else s["seq_len"]
    b = s["batch_size"]
    kwargs = dict(
        batch_size=b,
        seq_len=seq_len,
        dataset_len=n_convs,
        rank=0,
        world_size=1,
        overflow=overflow,
        buffer_size=BUFFER_SIZE,
        max_tokens=2048,
        num_threads=threads,
    )
    if mode == "varlen":
        kwargs["max_seqs"] = b * max(4, s["seq_len"] // 16)
    core = getattr(tokenizer, "_core", tokenizer)
    return _core.Packer(core, mode, **kwargs), kwargs.get("max_seqs")


def _pack_all(packer, max_seqs, s, mode, limit: int, keep: bool) -> tuple:
    """Runs ``plan`` + ``write`` until the packer needs more conversations
    or ``limit`` batches are written; returns ``(bytes written, batches)``
    (the batches as tensors when ``keep``, else their count)."""
    import numpy as np
    import torch

    b = s["batch_size"]
    cells = b * (2047 if mode == "padded" else s["seq_len"])
    wide = np.int64 if mode == "padded" else np.int32
    bufs = [np.empty(cells, dtype=wide), np.empty(cells, dtype=np.int64)]
    if max_seqs:
        bufs += [np.empty(max_seqs + 1, dtype=np.int32), np.empty(cells, dtype=np.int64)]
    written, kept, count = 0, [], 0
    while count < limit and packer.plan() == 0:
        rows, cols, nseq, _ = packer.shape()
        size = rows * cols
        arrays = [bufs[0][:size], bufs[1][:size]]
        if nseq:
            arrays += [bufs[2][:nseq], bufs[3][:size]]
        packer.write(*arrays)
        written += sum(a.nbytes for a in arrays)
        count += 1
        if keep:
            kept.append(tuple(torch.from_numpy(a.reshape(rows, cols).copy()) for a in arrays[:2]))
    return written, (kept if keep else count)


def _packer_alone(convs, tokenizer, s, threads) -> list:
    """Packing without rendering, in GB/s of batch written."""
    bos = tokenizer.get_bos_token_id()
    pad = tokenizer.encode_special("<|assistant_end|>")
    rendered = [tokenizer.render_conversation(c) for c in convs]
    n_convs = len(convs)

    def identity(r):
        return r

    rows = []
    for mode, overflow in (*MODES, ("varlen", "pad")):
        label = _label(mode, overflow)
        packer, max_seqs = _packer(tokenizer, s, mode, overflow, n_convs, threads)
        packer.push([convs[i] for i in packer.wanted(n_convs)])
        nbytes, got = _pack_all(packer, max_seqs, s, mode, 10**9, keep=mode != "varlen")
        n = len(got) if mode != "varlen" else got
        if n == 0:
            raise BenchmarkMismatch(f"packer alone {label}: no batch from {n_convs} conversations")
        if mode != "varlen":
            expected = _take(_baseline(rendered, identity, s, mode, overflow, bos, pad), n)
            _check(f"packer alone {label}", got, expected)

        def ours(mode=mode, overflow=overflow, n=n):
            packer, max_seqs = _packer(tokenizer, s, mode, overflow, n_convs, threads)
            packer.push([convs[i] for i in packer.wanted(n_convs)])
            return (lambda: _pack_all(packer, max_seqs, s, mode, n, keep=False)), _no_cleanup

        makers: dict = {"ours": ours}
        if mode != "varlen":

            def baseline(mode=mode, overflow=overflow, n=n):
                return (
                    lambda: _take(_baseline(rendered, identity, s, mode, overflow, bos, pad), n)
                ), _no_cleanup

            makers["baseline"] = baseline
        best = _best(makers, s["repeats"] + 2)
        gb = nbytes / 1e9
        info = dict(mode=mode, kind="packer", batches=n, batch_size=s["batch_size"])
        if mode == "varlen":
            rows.append(
                {
                    "section": SECTION,
                    "case": "packer alone (rendering excluded), varlen (no nanochat equivalent)",
                    "unit": "GB/s",
                    "ours": gb / best["ours"],
                    **info,
                }
            )
        else:
            rows.append(
                row(
                    SECTION,
                    f"packer alone (rendering excluded), {label}",
                    "GB/s",
                    gb / best["ours"],
                    gb / best["baseline"],
                    f"{BASELINE_NAME}, pre-rendered",
                    overflow=overflow if mode == "bestfit" else None,
                    **info,
                )
            )
    return rows


def run(quick: bool = False, **sizes: int) -> list[dict]:
    """Time the cases above; one row per case (see ``convpack.bench``).
    ``sizes`` override ``settings(quick)`` (``benches/bench_datagen.py``
    passes its command-line options).

    Raises:
        BenchmarkMismatch: if a DataGenerator batch differs from the
            baseline's.
    """

    import convpack
    from convpack.datagen import NoSupervisedTokensWarning

    with warnings.catch_warnings():
        # A generated conversation whose reply starts past max_tokens is
        # real data for a loader, not news for a benchmark.
        warnings.simplefilter("ignore", NoSupervisedTokensWarning)
        return _run(convpack, quick, sizes)


def _run(convpack, quick: bool, sizes: dict) -> list[dict]:
    s = settings(quick, **sizes)
    tokenizer = convpack.Tokenizer.from_tiktoken_file(
        cl100k_path(), pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
    enc = tiktoken_twin(tokenizer, "bench-nanochat")
    python = PythonRenderer.from_tiktoken(enc)
    convs = smoltalk_like_conversations(s["conversations"])
    threads = cpu_count()
    rows = _end_to_end(convs, tokenizer, python, s, threads)
    rows += _varlen(convs, tokenizer, s, threads)
    rows += _cache_epochs(convs, tokenizer, s)
    rows += _packer_alone(convs, tokenizer, s, threads)
    return rows
