"""Figures for sources beyond one process's memory (issue 21):

1. render throughput to shards (conversations/s), 1 and 2 processes;
2. peak RSS of a render of N generated conversations, for growing N (flat:
   memory is one shard per process, whatever the dataset's size);
3. epoch 2 from shards against epoch 1 from conversations (tokens/s of
   ``DataGenerator``, bestfit, numpy output);
4. resume time (``load_state_dict`` + the first batch) at batch 10^3, 10^4,
   10^5 (constant: nothing is replayed for a map-style dataset or shards).

    python benches/bench_stream.py            # the README's figures
    python benches/bench_stream.py --quick    # a smoke run

Peak RSS is measured in a fresh child process per N (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

WORDS = ("the cat sat on a mat while seven dogs ran far away from home and then came back to "
         "eat 42 apples with 3.14 spoons quickly").split()


class Generated:
    """``n`` conversations made on demand from their index (nothing held)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(i)

        def text(k):
            return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, k)))

        messages = []
        for _ in range(rng.randint(1, 3)):
            messages += [{"role": "user", "content": text(20)},
                         {"role": "assistant", "content": text(80)}]
        return {"messages": messages}


def tokenizer():
    import convpack

    texts = [" ".join(random.Random(i).choice(WORDS) for _ in range(50)) for i in range(300)]
    return convpack.Tokenizer.train_from_iterator(texts, vocab_size=340)


def render_rate(n: int, num_proc: int) -> float:
    import convpack

    tok = tokenizer()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        convpack.render_shards(Generated(n), tok, d, num_proc=num_proc, progress=False,
                               rows_per_shard=8192)
        return n / (time.perf_counter() - t)


def peak_rss_mib(n: int) -> float:
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import bench_stream as b, tempfile, convpack, resource\n"
            f"with tempfile.TemporaryDirectory() as d:\n"
            f"    convpack.render_shards(b.Generated({n}), b.tokenizer(), d, progress=False)\n"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def loader_rate(dataset, tok, batches: int) -> float:
    from convpack import DataGenerator

    g = DataGenerator(dataset, tok, mode="bestfit", batch_size=8, seq_len=1024, output="numpy")
    next(g)
    t = time.perf_counter()
    for _ in range(batches):
        next(g)
    return g.stats["tokens"] / (time.perf_counter() - t)


def resume_seconds(at: int) -> float:
    from convpack import DataGenerator

    tok = tokenizer()
    data = Generated(10**6)
    kw = dict(mode="stream", batch_size=1, seq_len=16, output="numpy", prefetch=0)
    g = DataGenerator(data, tok, **kw)
    for _ in range(at):
        next(g)
    state = json.loads(json.dumps(g.state_dict()))
    best = float("inf")
    for _ in range(5):  # the best of five: the cost itself, not the machine's noise
        t = time.perf_counter()
        fresh = DataGenerator(data, tok, **kw)
        fresh.load_state_dict(state)
        next(fresh)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    print(f"render throughput ({n} conversations): "
          f"1 process {render_rate(n, 1):,.0f} conv/s, 2 processes {render_rate(n, 2):,.0f} conv/s")
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    print("peak RSS of a render: " + ", ".join(f"{s:,} conversations {peak_rss_mib(s):.0f} MiB"
                                               for s in sizes))
    import convpack

    tok = tokenizer()
    data = Generated(n // 4)
    batches = 50 if args.quick else 400
    with tempfile.TemporaryDirectory() as d:
        shards = convpack.render_shards(data, tok, d, progress=False)
        fly, disk = loader_rate(data, tok, batches), loader_rate(shards, tok, batches)
    print(f"DataGenerator bestfit 8x1024: conversations {fly:,.0f} tok/s, "
          f"shards {disk:,.0f} tok/s ({disk / fly:.2f}x)")
    points = [10**3, 10**4] if args.quick else [10**3, 10**4, 10**5]
    print("resume (load_state_dict + first batch): " + ", ".join(
        f"batch {p:,} {1000 * resume_seconds(p):.1f} ms" for p in points))
    print(f"(this process peaked at "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
