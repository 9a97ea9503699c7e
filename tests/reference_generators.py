"""Independent reference implementations of the batch generators, written
plainly from SPEC ("Packing: DataGenerator"), i.e. the semantics of
nanochat's SFT collate loop, mid-training loop and BOS-aligned best-fit loop.
Pure Python over plain lists; the oracle for convpack's packers in tests and
benchmarks.

Rendering is a pure-Python reference over tiktoken (``ReferenceRender``), so
nothing here runs convpack code.

Each generator yields ``(batch, info)``: ``batch`` is the tuple of tensors
and ``info`` a dict with ``consumed`` (nanochat's consumption counter, which
starts at the rank and grows by the world size per conversation used up).
Bad conversations (render raises ``ValueError``) are skipped when ``skip``
is true and still advance the counters.
"""

from __future__ import annotations

import torch
from reference_render import ReferenceRenderer


class ReferenceRender(ReferenceRenderer):
    """SPEC's render_conversation over a tiktoken encoding (memoised by
    dataset index, since the same conversation renders the same)."""

    def __init__(self, enc, max_tokens=2048):
        super().__init__(enc)
        self.max_tokens = max_tokens
        self.bos = self.special["<|bos|>"]
        self.assistant_end = self.special["<|assistant_end|>"]
        self._memo = {}

    def __call__(self, conversation):
        return self.render(conversation, self.max_tokens)

    def at(self, dataset, i):
        """Renders ``dataset[i]``; ``None`` for a bad conversation."""
        if i not in self._memo:
            try:
                self._memo[i] = self(dataset[i])
            except (ValueError, KeyError, TypeError):
                self._memo[i] = None
        return self._memo[i]


def split_turns(conversation, render, limit):
    """``truncate="turns"`` written plainly: ``(pieces, exchanges_cut,
    supervised_dropped)`` with ``pieces`` a list of ``(ids, mask)``.

    A conversation that renders within ``limit`` tokens is one piece. A
    longer one is split into runs of whole exchanges (a user message and the
    reply after it), each run as long as still renders within ``limit`` when
    rendered alone as a conversation (with the system message, if any, in
    front again); a single exchange that does not fit is cut to ``limit``; a
    final user message without a reply that would stand alone is left out.
    Lengths come from rendering the candidate runs, not from arithmetic.
    """
    big = 10**12
    messages = conversation["messages"]
    whole = render.render(conversation, big)
    if len(whole[0]) <= limit:
        return [whole], 0, 0
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    exchanges = [rest[i:i + 2] for i in range(0, len(rest), 2)]

    def run(i, j):
        return render.render({"messages": system + [m for ex in exchanges[i:j] for m in ex]}, big)

    pieces, cut, dropped = [], 0, 0
    i = 0
    while i < len(exchanges):
        j = i + 1
        while j < len(exchanges) and len(run(i, j + 1)[0]) <= limit:
            j += 1
        if j == i + 1 and len(exchanges[i]) == 1 and pieces:
            break  # a last user message with no reply, alone: nothing to train on
        ids, mask = run(i, j)
        if len(ids) > limit:
            cut += 1
            dropped += sum(mask[limit:])
            ids, mask = ids[:limit], mask[:limit]
        pieces.append((ids, mask))
        i = j
    return pieces, cut, dropped


def _bad(i):
    return ValueError(f"conversation {i} is bad")


def padded(dataset, render, batch_size, rank=0, world_size=1, seq_len=None, skip=False):
    """nanochat SFT collate: strided per epoch, int64, ncols = max(len) - 1,
    inputs padded with <|assistant_end|>, targets -1 where mask[1:] == 0."""
    pad = render.assistant_end
    batch, epoch = [], 0
    while True:
        for i in range(rank, len(dataset), world_size):
            r = render.at(dataset, i)
            consumed = epoch * len(dataset) + i + world_size
            if r is None:
                if not skip:
                    raise _bad(i)
                continue
            ids, mask = r
            if seq_len is not None:
                ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            batch.append((ids, mask))
            if len(batch) == batch_size:
                ncols = max(len(ids) for ids, _ in batch) - 1
                inputs = torch.full((batch_size, ncols), pad, dtype=torch.long)
                targets = torch.full((batch_size, ncols), -1, dtype=torch.long)
                for row, (ids, mask) in enumerate(batch):
                    n = len(ids)
                    inputs[row, : n - 1] = torch.tensor(ids[:-1], dtype=torch.long)
                    t = torch.tensor(ids[1:], dtype=torch.long)
                    t[torch.tensor(mask[1:], dtype=torch.long) == 0] = -1
                    targets[row, : n - 1] = t
                yield (inputs, targets), {"consumed": consumed}
                batch = []
        epoch += 1


def stream(dataset, render, batch_size, seq_len, rank=0, world_size=1, skip=False):
    """nanochat mid-training: concatenated ids, B*T+1 tokens per batch, the
    cursor starts at rank, steps by world size and wraps by subtraction."""
    needed = batch_size * seq_len + 1
    buffer = []
    cursor, fetched = rank, 0
    while True:
        while len(buffer) < needed:
            r = render.at(dataset, cursor)
            if r is None and not skip:
                raise _bad(cursor)
            if r is not None:
                buffer.extend(r[0])
            fetched += 1
            cursor += world_size
            if cursor >= len(dataset):
                cursor -= len(dataset)
        scratch = torch.tensor(buffer[:needed], dtype=torch.long)
        del buffer[:needed]
        inputs = scratch[:-1].to(torch.int32).view(batch_size, seq_len)
        targets = scratch[1:].view(batch_size, seq_len)
        yield (inputs, targets), {"consumed": rank + fetched * world_size}


def bestfit(dataset, render, batch_size, seq_len, buffer_size=100, overflow="pad",
            rank=0, world_size=1, skip=False):
    """nanochat's BOS-aligned best-fit: rows of T+1; the largest buffered
    conversation that fits (first on ties); else pad with BOS (mask 0) or
    crop the shortest (first on ties). Conversations longer than a row are
    truncated to the row when they enter the buffer."""
    cap = seq_len + 1
    bos = render.bos
    buffer = []
    cursor, consumed = rank, rank

    def refill():
        nonlocal cursor, consumed
        while len(buffer) < buffer_size:
            r = render.at(dataset, cursor)
            if r is None:
                if not skip:
                    raise _bad(cursor)
                consumed += world_size
            else:
                buffer.append((r[0][:cap], r[1][:cap]))
            cursor = (cursor + world_size) % len(dataset)

    while True:
        rows, masks = [], []
        for _ in range(batch_size):
            row, mrow = [], []
            while len(row) < cap:
                refill()
                remaining = cap - len(row)
                best, best_len = -1, 0
                for i, (ids, _) in enumerate(buffer):
                    if best_len < len(ids) <= remaining:
                        best, best_len = i, len(ids)
                if best >= 0:
                    ids, mask = buffer.pop(best)
                    row += ids
                    mrow += mask
                    consumed += world_size
                elif overflow == "crop":
                    shortest = min(range(len(buffer)), key=lambda i: len(buffer[i][0]))
                    ids, mask = buffer.pop(shortest)
                    row += ids[:remaining]
                    mrow += mask[:remaining]
                    consumed += world_size
                else:
                    row += [bos] * remaining
                    mrow += [0] * remaining
            rows.append(row)
            masks.append(mrow)
        batch = torch.tensor(rows, dtype=torch.long)
        inputs = batch[:, :-1].to(torch.int32)
        targets = batch[:, 1:].clone()
        targets[torch.tensor(masks, dtype=torch.int8)[:, 1:] == 0] = -1
        yield (inputs, targets), {"consumed": consumed}


def varlen(dataset, render, batch_size, seq_len, max_seqs, rank=0, world_size=1, skip=False):
    """convpack's padding-free layout as documented in convpack.datagen:
    segments of one conversation's inputs with its own next tokens as
    targets, continued across rows, at most max_seqs per batch."""
    bos = render.bos
    cursor, consumed = rank, rank
    head = None  # (ids, mask, offset)

    def next_doc():
        nonlocal cursor, consumed
        while True:
            r = render.at(dataset, cursor)
            if r is None and not skip:
                raise _bad(cursor)
            cursor = (cursor + world_size) % len(dataset)
            if r is None or len(r[0]) < 2:
                consumed += world_size
                continue
            return (r[0], r[1], 0)

    while True:
        inputs = torch.full((batch_size, seq_len), bos, dtype=torch.int32)
        targets = torch.full((batch_size, seq_len), -1, dtype=torch.long)
        positions = torch.zeros((batch_size, seq_len), dtype=torch.long)
        bounds, used = [0], 0
        for row in range(batch_size):
            pos = 0
            while pos < seq_len:
                if head is None:
                    head = next_doc()
                ids, mask, off = head
                take = min(len(ids) - 1 - off, seq_len - pos)
                ends_row = pos + take == seq_len
                later_rows = batch_size - row - 1
                if used + 1 + (0 if ends_row else 1) + later_rows <= max_seqs:
                    for j in range(take):
                        inputs[row, pos + j] = ids[off + j]
                        targets[row, pos + j] = ids[off + j + 1] if mask[off + j + 1] else -1
                        positions[row, pos + j] = j
                    pos += take
                    if off + take == len(ids) - 1:
                        head = None
                        consumed += world_size
                    else:
                        head = (ids, mask, off + take)
                else:
                    take = seq_len - pos
                    positions[row, pos:] = torch.arange(take)
                    pos = seq_len
                used += 1
                bounds.append(row * seq_len + pos)
        cu = torch.full((max_seqs + 1,), batch_size * seq_len, dtype=torch.int32)
        cu[: len(bounds)] = torch.tensor(bounds, dtype=torch.int32)
        yield (inputs, targets, cu, positions), {"consumed": consumed}
