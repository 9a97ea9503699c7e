"""The CUDA path of DataGenerator on a real device: pinned ring, non_blocking
copies, event-guarded slot reuse. CI has no GPU, so this is the check to run
on a machine that has one (it exits 0 with a note where CUDA is missing):

    python benches/cuda_check.py [--batches 50] [--conversations 1000]

For every mode it compares the batches delivered on the GPU with the CPU
generator's, while a long GPU kernel keeps the copy stream busy so a slot
reused too early would show up as a corrupted batch; then it times both.
"""

from __future__ import annotations

import argparse
import time

import torch

import convpack
from convpack.bench.common import cl100k_path
from convpack.bench.texts import smoltalk_like_conversations
from convpack.datagen import DataGenerator

MODES = [
    ("padded", {}),
    ("stream", {}),
    ("bestfit", {"overflow": "pad"}),
    ("bestfit", {"overflow": "crop"}),
    ("varlen", {}),
]


def check(batches: int, conversations: int, batch_size: int, seq_len: int) -> int:
    if not torch.cuda.is_available():
        print("CUDA is not available: nothing to check here")
        return 0
    device = torch.device("cuda")
    tok = convpack.Tokenizer.from_tiktoken_file(
        cl100k_path(), pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
    convs = smoltalk_like_conversations(conversations)
    busy = torch.randn(4096, 4096, device=device)
    failures = 0
    for mode, extra in MODES:
        kwargs = dict(batch_size=batch_size, seq_len=seq_len, mode=mode, **extra)
        cpu = DataGenerator(convs, tok, **kwargs)
        gpu = DataGenerator(convs, tok, device=device, prefetch=2, **kwargs)
        ring = gpu._producer.ring
        pinned = all(t.is_pinned() for slot in ring.slots for t in slot)
        same = True
        for _ in range(batches):
            want = next(cpu)
            got = next(gpu)
            for _ in range(4):  # keep the GPU busy while copies are queued
                busy = busy @ busy
                busy = busy / busy.norm()
            for w, g in zip(want, got):
                same &= g.device.type == "cuda" and g.dtype == w.dtype
                same &= torch.equal(g.cpu(), w)
        torch.cuda.synchronize()
        n = batch_size * seq_len * batches
        t0 = time.perf_counter()
        for _ in range(batches):
            next(gpu)
        torch.cuda.synchronize()
        gpu_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(cpu)
        cpu_rate = n / (time.perf_counter() - t0)
        cpu.close()
        gpu.close()
        name = f"{mode}/{extra.get('overflow')}" if extra else mode
        print(
            f"{name:14s} pinned={pinned} identical={same} "
            f"cuda {gpu_rate / 1e6:7.1f}M tok/s  cpu {cpu_rate / 1e6:7.1f}M tok/s"
        )
        failures += (not same) + (not pinned)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    a = parser.parse_args()
    raise SystemExit(check(a.batches, a.conversations, a.batch_size, a.seq_len))


if __name__ == "__main__":
    main()
