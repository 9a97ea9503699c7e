"""The tests' oracle for convpack's packers: the pure-Python generators of
``convpack.bench.baseline`` (the one Python restatement of nanochat's SFT
collate, mid-training and BOS-aligned best-fit loops, which the benchmarks
also time) run over ``ReferenceRender``, SPEC's render_conversation written
plainly over tiktoken. Nothing here runs convpack's Rust code.

Each generator yields ``(batch, info)``: ``batch`` is the tuple of tensors
and ``info`` a dict with ``consumed`` (nanochat's consumption counter, which
starts at the rank and grows by the world size per conversation used up).
Bad conversations (render raises ``ValueError``) are skipped when ``skip``
is true and still advance the counters.
"""

from __future__ import annotations

from reference_render import ReferenceRenderer

from convpack.bench import baseline


class ReferenceRender(ReferenceRenderer):
    """SPEC's render_conversation over a tiktoken encoding, truncated to
    ``max_tokens``; memoised per conversation object (the same conversation
    renders the same)."""

    def __init__(self, enc, max_tokens=2048):
        super().__init__(enc)
        self.max_tokens = max_tokens
        self.bos = self.special["<|bos|>"]
        self.assistant_end = self.special["<|assistant_end|>"]
        self._memo = {}

    def __call__(self, conversation):
        key = id(conversation)
        hit = self._memo.get(key)
        if hit is None or hit[0] is not conversation:
            try:
                hit = (conversation, self.render(conversation, self.max_tokens), None)
            except (ValueError, KeyError, TypeError) as e:
                hit = (conversation, None, e)
            self._memo[key] = hit
        if hit[2] is not None:
            raise hit[2]
        return hit[1]


def padded(dataset, render, batch_size, rank=0, world_size=1, seq_len=None, skip=False):
    return baseline.padded_batches(dataset, render, batch_size, render.assistant_end, rank=rank,
                                   world_size=world_size, seq_len=seq_len, skip=skip, info=True)


def stream(dataset, render, batch_size, seq_len, rank=0, world_size=1, skip=False):
    return baseline.stream_batches(dataset, render, batch_size, seq_len, rank=rank,
                                   world_size=world_size, skip=skip, info=True)


def bestfit(dataset, render, batch_size, seq_len, buffer_size=100, overflow="pad",
            rank=0, world_size=1, skip=False, keep_long=False):
    return baseline.bestfit_batches(dataset, render, batch_size, seq_len, render.bos,
                                    buffer_size=buffer_size, overflow=overflow, rank=rank,
                                    world_size=world_size, skip=skip, info=True,
                                    keep_long=keep_long)


def varlen(dataset, render, batch_size, seq_len, max_seqs, rank=0, world_size=1, skip=False):
    return baseline.varlen_batches(dataset, render, batch_size, seq_len, max_seqs, render.bos,
                                   rank=rank, world_size=world_size, skip=skip, info=True)


def split_turns(conversation, render, limit):
    """``(pieces, exchanges_cut, supervised_dropped)`` of ``truncate="turns"``."""
    return baseline.split_turns(conversation, render.render, limit)
