"""End-to-end DataGenerator throughput (tokens/s) against the pure-Python
generators (nanochat's way: tiktoken per message, Python lists, Python
collate) on the same SmolTalk-like conversations (about 4.7 messages of
about 845 characters): ``padded``, ``stream``, ``bestfit`` with overflow
``pad`` and ``crop`` on 1 thread and on every core, ``varlen`` alone, and
the packer alone (rendering excluded) in GB/s.

The benchmark lives in ``convpack.bench.datagen`` so that ``convpack bench``
runs it after ``pip install``; this script runs it alone:

    python benches/bench_datagen.py [--quick] [--conversations 2000] [--batches 100]
                                    [--batch-size 8] [--seq-len 2048]

Batches are checked identical before timing; ratios are convpack / baseline.
"""

from __future__ import annotations

import argparse
from typing import Optional

from convpack.bench import datagen
from convpack.bench.report import table


def run(quick: bool = False, **sizes: Optional[int]) -> list:
    """The benchmark's rows (see ``convpack.bench`` for their keys)."""
    return datagen.run(quick, **sizes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, short timings")
    defaults = datagen.settings(False)
    for name, what in (
        ("conversations", "SmolTalk-like conversations generated"),
        ("batches", "batches per timed pass"),
        ("batch-size", "rows per batch (B)"),
        ("seq-len", "columns per row (T; padded rows are as long as the longest)"),
    ):
        key = name.replace("-", "_")
        parser.add_argument(
            f"--{name}", type=int, default=None, help=f"{what} (default {defaults[key]})"
        )
    args = parser.parse_args()
    print(
        table(
            run(
                args.quick,
                conversations=args.conversations,
                batches=args.batches,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
            )
        )
    )
