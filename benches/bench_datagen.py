"""End-to-end DataGenerator throughput against the reference Python
generators (nanochat's way: tiktoken per message, Python lists, Python
collate), on the same SmolTalk-like conversations (about 4.7 messages of about
845 characters). Outputs are asserted equal before anything is timed; the
report is ratios (ours / baseline), plus the packer alone in GB/s.

    python benches/bench_datagen.py [--conversations 600] [--batches 100]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import tiktoken
import torch
from tiktoken.load import load_tiktoken_bpe

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import reference_generators as ref  # noqa: E402

import convpack  # noqa: E402
from convpack import _core  # noqa: E402
from convpack.datagen import DataGenerator  # noqa: E402

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "so no will can more about said up out what some into them other than then its time "
         "only could new these two may first any like now my such make over our even most "
         "algorithm python function return value error because therefore however 2024 3.14 "
         "example answer question result first second third solution step compute").split()


def smoltalk_like(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)

    def text():
        target = max(20, int(rng.gauss(845, 400)))
        words, size = [], 0
        while size < target:
            w = rng.choice(WORDS)
            words.append(w)
            size += len(w) + 1
        return " ".join(words)

    out = []
    for _ in range(n):
        turns = max(1, round(rng.gauss(2.2, 1.0)))
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": text()[:200]})
        for _ in range(turns):
            messages.append({"role": "user", "content": text()})
            messages.append({"role": "assistant", "content": text()})
        out.append({"messages": messages})
    return out


class Unmemoised(ref.ReferenceRender):
    """The baseline renders every conversation each time it is read."""

    def at(self, dataset, i):
        try:
            return self(dataset[i])
        except ValueError:
            return None


def reference(mode, overflow, data, render, b, t):
    if mode == "padded":
        return ref.padded(data, render, b, seq_len=None)
    if mode == "stream":
        return ref.stream(data, render, b, t)
    return ref.bestfit(data, render, b, t, 100, overflow)


def timed(it, n, repeats=3):
    """Best tokens/s of ``repeats`` runs of ``n`` batches (the machine may be
    shared; the best run is the least disturbed)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = 0
        for _ in range(n):
            batch = next(it)
            if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[1], dict):
                batch = batch[0]
            tokens += batch[0].numel()
        best = max(best, tokens / (time.perf_counter() - start))
    return best


def packer_alone(tok, data, mode, b, t, overflow="pad"):
    """GB/s of output written by plan+write with every conversation already
    rendered (rendering excluded)."""
    seq = None if mode == "padded" else t
    kwargs = dict(batch_size=b, seq_len=seq, dataset_len=len(data), rank=0, world_size=1,
                  overflow=overflow, buffer_size=100, max_tokens=2048, num_threads=0)
    if mode == "varlen":
        kwargs["max_seqs"] = b * max(4, t // 16)
    p = _core.Packer(tok._core, mode, **kwargs)
    p.push([data[i] for i in p.wanted(len(data))])
    p.push([data[i] for i in p.wanted(len(data))])
    total_bytes, elapsed = 0, 0.0
    cells = b * (2048 if mode == "padded" else t)
    in_dtype = np.int64 if mode == "padded" else np.int32
    bufs = [np.empty(cells, dtype=in_dtype), np.empty(cells, dtype=np.int64),
            np.empty(kwargs.get("max_seqs", 0) + 1, dtype=np.int32), np.empty(cells, dtype=np.int64)]
    for _ in range(10_000):
        start = time.perf_counter()
        if p.plan() != 0:
            break
        rows, cols, nseq, _ = p.shape()
        n = rows * cols
        arrays = [bufs[0][:n], bufs[1][:n]] + ([bufs[2][:nseq], bufs[3][:n]] if nseq else [])
        p.write(*arrays)
        elapsed += time.perf_counter() - start
        total_bytes += sum(a.nbytes for a in arrays)
    return total_bytes / elapsed / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()

    import tiktoken_ext

    path = os.path.join(list(tiktoken_ext.__path__)[0], "data", "cl100k_base.tiktoken")
    ranks = load_tiktoken_bpe(path)
    specials = {name: len(ranks) + i for i, name in enumerate(convpack.CHAT_SPECIAL_TOKENS)}
    enc = tiktoken.Encoding("bench", pat_str=convpack.SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens=specials)
    tok = convpack.Tokenizer.from_tiktoken_file(path)
    data = smoltalk_like(args.conversations)
    msgs = [m for c in data for m in c["messages"]]
    print(f"{len(data)} conversations, {len(msgs) / len(data):.1f} messages each, "
          f"{sum(len(m['content']) for m in msgs) / len(msgs):.0f} chars per message; "
          f"B={args.batch_size} T={args.seq_len}, {os.cpu_count()} CPUs")
    b, t, n = args.batch_size, args.seq_len, args.batches

    print(f"{'mode':14s} {'baseline tok/s':>15s} {'1 thread':>10s} {'all threads':>12s}")
    for mode, overflow in (("padded", "pad"), ("stream", "pad"), ("bestfit", "pad"), ("bestfit", "crop")):
        seq = None if mode == "padded" else t
        # Equal outputs first.
        check = reference(mode, overflow, data, Unmemoised(enc), b, seq)
        gen = DataGenerator(data, tok, batch_size=b, seq_len=seq, mode=mode, overflow=overflow,
                            prefetch=0)
        for _ in range(5):
            want, _ = next(check)
            got = next(gen)
            assert all(g.dtype == w.dtype and torch.equal(g, w) for g, w in zip(got, want)), mode
        gen.close()
        base = timed(reference(mode, overflow, data, Unmemoised(enc), b, seq), n)
        one = timed(DataGenerator(data, tok, batch_size=b, seq_len=seq, mode=mode,
                                  overflow=overflow, prefetch=0, num_threads=1), n)
        every = DataGenerator(data, tok, batch_size=b, seq_len=seq, mode=mode, overflow=overflow,
                              prefetch=2)
        allt = timed(every, n)
        every.close()
        name = f"{mode}/{overflow}" if mode == "bestfit" else mode
        print(f"{name:14s} {base:15.0f} {one / base:9.1f}x {allt / base:11.1f}x")

    print("packer alone (rendering excluded), output GB/s:")
    for mode, overflow in (("padded", "pad"), ("stream", "pad"), ("bestfit", "pad"),
                           ("bestfit", "crop"), ("varlen", "pad")):
        gbs = packer_alone(tok, data, mode, b, t, overflow)
        print(f"  {mode}/{overflow}: {gbs:.2f} GB/s")


if __name__ == "__main__":
    main()
