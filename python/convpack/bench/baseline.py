"""The pure-Python data path convpack replaces, written the way nanochat
writes it: tiktoken ``encode_ordinary`` per message, Python lists, Python
collation into torch tensors.

These are the baselines the benchmarks and ``convpack demo`` time convpack
against (the benchmarks first check that both give the same output), and
the tests' oracle for ``DataGenerator`` (``tests/reference_generators.py``
runs them over a reference renderer on tiktoken): one restatement of
nanochat's semantics, with no convpack code in it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

__all__ = [
    "PythonRenderer",
    "bestfit_batches",
    "padded_batches",
    "split_turns",
    "stream_batches",
    "varlen_batches",
]


class PythonRenderer:
    """``render_conversation`` in plain Python over any ``encode(str) -> ids``.

    Follows SPEC's table: ``<|bos|>``; user turns masked out; assistant text
    and python parts trained on; python outputs masked out; each text
    encoded on its own; the result cut to ``max_tokens``.
    """

    def __init__(self, encode: Callable[[str], list], special_ids: dict) -> None:
        self.encode = encode
        self.special = dict(special_ids)

    @classmethod
    def from_tiktoken(cls, enc: Any) -> PythonRenderer:
        """Over a ``tiktoken.Encoding`` whose special tokens include the chat ones."""
        from convpack import CHAT_SPECIAL_TOKENS

        return cls(
            enc.encode_ordinary,
            {name: enc.encode_single_token(name) for name in CHAT_SPECIAL_TOKENS},
        )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PythonRenderer:
        """Over ``convpack.Tokenizer.encode`` (BPE in Rust, the rest in Python):
        the fallback when tiktoken is not installed."""
        return cls(tokenizer.encode_ordinary, tokenizer.special_tokens)

    def render_conversation(self, conversation: dict, max_tokens: int = 2048) -> tuple:
        ids: list = []
        mask: list = []
        special = self.special
        encode = self.encode

        def add(tokens: list, m: int) -> None:
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        messages = conversation["messages"]
        if messages and messages[0]["role"] == "system":
            # The system prompt joins the first user message (copied: the
            # caller's conversation stays as it was).
            first = {
                "role": "user",
                "content": messages[0]["content"] + "\n\n" + messages[1]["content"],
            }
            messages = [first, *messages[2:]]
        add([special["<|bos|>"]], 0)
        for i, message in enumerate(messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message["role"] != expected:
                raise ValueError(
                    f"message {i}: expected role {expected!r}, got {message['role']!r}"
                )
            content = message["content"]
            if expected == "user":
                add([special["<|user_start|>"], *encode(content), special["<|user_end|>"]], 0)
                continue
            add([special["<|assistant_start|>"]], 0)
            if isinstance(content, str):
                add(encode(content), 1)
            else:
                for part in content:
                    tokens = encode(part["text"])
                    kind = part["type"]
                    if kind == "text":
                        add(tokens, 1)
                    elif kind == "python":
                        add([special["<|python_start|>"], *tokens, special["<|python_end|>"]], 1)
                    elif kind == "python_output":
                        add([special["<|output_start|>"], *tokens, special["<|output_end|>"]], 0)
                    else:
                        raise ValueError(f"message {i}: unknown part type {kind!r}")
            add([special["<|assistant_end|>"]], 1)
        return ids[:max_tokens], mask[:max_tokens]


Render = Callable[[dict], tuple]

# A conversation ``render`` refuses (it raises one of these) is bad: skipped
# with ``skip=True`` (still counted as consumed), else the error propagates.
_BAD = (ValueError, KeyError, TypeError)


def _fetch(dataset: Sequence, render: Render, i: int, skip: bool) -> Any:
    """``render(dataset[i])``, or ``None`` for a bad one when skipping."""
    try:
        return render(dataset[i])
    except _BAD:
        if not skip:
            raise
        return None


def padded_batches(
    dataset: Sequence,
    render: Render,
    batch_size: int,
    pad_id: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seq_len: Optional[int] = None,
    skip: bool = False,
    info: bool = False,
) -> Iterator[tuple]:
    """nanochat's SFT loop: this rank's conversations ``rank, rank +
    world_size, ...`` each epoch, ``batch_size`` per batch (a batch may span
    epochs), padded to the longest (``ids`` cut to ``seq_len + 1`` when
    given); inputs ``ids[:-1]`` padded with ``pad_id``, targets ``ids[1:]``
    with -1 where the mask is 0 and on padding; both int64.

    With ``info``, yields ``(batch, {"consumed": c})``, ``c`` being
    nanochat's consumption position (starts at the rank, grows by the world
    size per conversation used up).
    """
    import torch

    def collate(batch: list) -> tuple:
        ncols = max(len(ids) for ids, _ in batch) - 1
        inputs = torch.full((len(batch), ncols), pad_id, dtype=torch.long)
        targets = torch.full((len(batch), ncols), -1, dtype=torch.long)
        for i, (ids, mask) in enumerate(batch):
            n = len(ids)
            row = torch.tensor(ids, dtype=torch.long)
            inputs[i, : n - 1] = row[:-1]
            row_targets = row[1:].clone()
            row_targets[torch.tensor(mask[1:], dtype=torch.long) == 0] = -1
            targets[i, : n - 1] = row_targets
        return inputs, targets

    batch: list = []
    epoch = 0
    while True:
        for i in range(rank, len(dataset), world_size):
            r = _fetch(dataset, render, i, skip)
            if r is None:
                continue
            ids, mask = r
            if seq_len is not None:
                ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            batch.append((ids, mask))
            if len(batch) == batch_size:
                out = collate(batch)
                yield (out, {"consumed": epoch * len(dataset) + i + world_size}) if info else out
                batch = []
        epoch += 1


def stream_batches(
    dataset: Sequence,
    render: Render,
    batch_size: int,
    seq_len: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip: bool = False,
    info: bool = False,
) -> Iterator[tuple]:
    """nanochat's mid-training loop: rendered ids concatenated (mask
    ignored); each batch takes the next ``B*T+1`` tokens, inputs int32 and
    targets int64 viewed ``(B, T)``. The cursor starts at ``rank``, steps by
    ``world_size`` and wraps by subtracting the length. ``info`` as in
    ``padded_batches``."""
    import torch

    needed = batch_size * seq_len + 1
    buffer: deque = deque()
    cursor, fetched = rank, 0
    while True:
        while len(buffer) < needed:
            r = _fetch(dataset, render, cursor, skip)
            if r is not None:
                buffer.extend(r[0])
            fetched += 1
            cursor += world_size
            if cursor >= len(dataset):
                cursor -= len(dataset)
        scratch = torch.tensor([buffer.popleft() for _ in range(needed)], dtype=torch.int64)
        out = (
            scratch[:-1].to(torch.int32).view(batch_size, seq_len),
            scratch[1:].view(batch_size, seq_len),
        )
        yield (out, {"consumed": rank + fetched * world_size}) if info else out


def bestfit_batches(
    dataset: Sequence,
    render: Render,
    batch_size: int,
    seq_len: int,
    bos_id: int,
    buffer_size: int = 100,
    counts: Optional[dict] = None,
    overflow: str = "pad",
    *,
    rank: int = 0,
    world_size: int = 1,
    skip: bool = False,
    info: bool = False,
    keep_long: bool = False,
) -> Iterator[tuple]:
    """Best-fit packing in Python: every row starts at a BOS; the largest
    buffered conversation that fits goes in next (the first of equals);
    when none fits, ``overflow="pad"`` makes the rest of the row padding
    (BOS, target -1) and ``overflow="crop"`` fills it with the start of the
    shortest buffered conversation (the first of equals), whose remainder
    is dropped. A conversation longer than a row is cut to the row as it
    enters the buffer (so it fills an empty row); with ``keep_long`` it
    enters whole and, never fitting, stays there (nanochat's loop as it is). The buffer refills from a
    cursor that starts at ``rank`` and steps by ``world_size``. ``counts``
    (if given) accumulates ``"tokens"`` and ``"pad"``, the row positions
    filled and those that are padding. ``info`` as in ``padded_batches``."""
    if overflow not in ("pad", "crop"):
        raise ValueError(f"overflow must be 'pad' or 'crop', got {overflow!r}")
    import torch

    capacity = seq_len + 1
    pool: list = []
    cursor, consumed = rank, rank
    while True:
        rows_ids, rows_mask = [], []
        for _ in range(batch_size):
            ids_row: list = []
            mask_row: list = []
            while len(ids_row) < capacity:
                while len(pool) < buffer_size:
                    r = _fetch(dataset, render, cursor, skip)
                    if r is None:
                        consumed += world_size
                    else:
                        ids, mask = r
                        pool.append((ids, mask) if keep_long else (ids[:capacity], mask[:capacity]))
                    cursor = (cursor + world_size) % len(dataset)
                room = capacity - len(ids_row)
                best = -1
                for j, (ids, _) in enumerate(pool):
                    if len(ids) <= room and (best < 0 or len(ids) > len(pool[best][0])):
                        best = j
                if best >= 0:
                    ids, mask = pool.pop(best)
                    consumed += world_size
                elif overflow == "crop":
                    shortest = min(range(len(pool)), key=lambda j: len(pool[j][0]))
                    ids, mask = pool.pop(shortest)
                    ids, mask = ids[:room], mask[:room]
                    consumed += world_size
                else:
                    ids, mask = [bos_id] * room, [0] * room
                    if counts is not None:
                        counts["pad"] = counts.get("pad", 0) + room
                ids_row.extend(ids)
                mask_row.extend(mask)
            if counts is not None:
                counts["tokens"] = counts.get("tokens", 0) + capacity
            rows_ids.append(ids_row)
            rows_mask.append(mask_row)
        ids_t = torch.tensor(rows_ids, dtype=torch.int64)
        mask_t = torch.tensor(rows_mask, dtype=torch.int64)
        targets = ids_t[:, 1:].clone()
        targets[mask_t[:, 1:] == 0] = -1
        out = (ids_t[:, :-1].to(torch.int32), targets)
        yield (out, {"consumed": consumed}) if info else out


def varlen_batches(
    dataset: Sequence,
    render: Render,
    batch_size: int,
    seq_len: int,
    max_seqs: int,
    bos_id: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip: bool = False,
    info: bool = False,
) -> Iterator[tuple]:
    """convpack's padding-free layout (no nanochat equivalent), as
    ``convpack.datagen`` documents it: rows filled end to end with segments
    of one conversation's inputs whose targets are its own next tokens
    (continued across rows and batches), at most ``max_seqs`` segments per
    batch (else the rest of a row is one filler segment); yields
    ``(inputs, targets, cu_seqlens, position_ids)``. The cursor is
    ``bestfit_batches``'; conversations of fewer than two tokens are
    dropped. ``info`` as in ``padded_batches``."""
    import torch

    cursor, consumed = rank, rank
    head = None  # (ids, mask, offset)

    def next_doc() -> tuple:
        nonlocal cursor, consumed
        while True:
            r = _fetch(dataset, render, cursor, skip)
            cursor = (cursor + world_size) % len(dataset)
            if r is None or len(r[0]) < 2:
                consumed += world_size
                continue
            return (r[0], r[1], 0)

    while True:
        inputs = torch.full((batch_size, seq_len), bos_id, dtype=torch.int32)
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
        out = (inputs, targets, cu, positions)
        yield (out, {"consumed": consumed}) if info else out


def split_turns(conversation: dict, render: Callable, limit: int) -> tuple:
    """``DataGenerator(truncate="turns")`` written plainly: ``(pieces,
    exchanges_cut, supervised_dropped)`` with ``pieces`` a list of ``(ids,
    mask)``; ``render(conversation, max_tokens)`` renders.

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
    whole = render(conversation, big)
    if len(whole[0]) <= limit:
        return [whole], 0, 0
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    exchanges = [rest[i : i + 2] for i in range(0, len(rest), 2)]

    def run(i: int, j: int) -> tuple:
        return render({"messages": system + [m for ex in exchanges[i:j] for m in ex]}, big)

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
