"""The pure-Python data path convpack replaces, written the way nanochat
writes it: tiktoken ``encode_ordinary`` per message, Python lists, Python
collation into torch tensors.

These are the baselines the benchmarks and ``convpack demo`` time convpack
against; the benchmarks first check that both give the same output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["PythonRenderer", "padded_batches", "stream_batches", "bestfit_batches"]


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


def padded_batches(
    dataset: Sequence, render: Render, batch_size: int, pad_id: int
) -> Iterator[tuple]:
    """nanochat's SFT loop: ``batch_size`` conversations per batch, padded
    to the longest; targets -1 where the mask is 0 and on padding."""
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
    while True:
        for i in range(len(dataset)):
            batch.append(render(dataset[i]))
            if len(batch) == batch_size:
                yield collate(batch)
                batch = []


def stream_batches(
    dataset: Sequence, render: Render, batch_size: int, seq_len: int
) -> Iterator[tuple]:
    """nanochat's mid-training loop: rendered ids concatenated; each batch
    takes the next ``B*T+1`` tokens (mask ignored)."""
    import torch

    needed = batch_size * seq_len + 1
    buffer: deque = deque()
    cursor = 0
    while True:
        while len(buffer) < needed:
            ids, _ = render(dataset[cursor])
            buffer.extend(ids)
            cursor = (cursor + 1) % len(dataset)
        scratch = torch.tensor([buffer.popleft() for _ in range(needed)], dtype=torch.int64)
        yield (
            scratch[:-1].to(torch.int32).view(batch_size, seq_len),
            scratch[1:].view(batch_size, seq_len),
        )


def bestfit_batches(
    dataset: Sequence,
    render: Render,
    batch_size: int,
    seq_len: int,
    bos_id: int,
    buffer_size: int = 100,
    counts: dict | None = None,
    overflow: str = "pad",
) -> Iterator[tuple]:
    """Best-fit packing in Python: every row starts at a BOS; the largest
    buffered conversation that fits goes in next (the first of equals);
    when none fits, ``overflow="pad"`` makes the rest of the row padding
    (BOS, target -1) and ``overflow="crop"`` fills it with the start of the
    shortest buffered conversation (the first of equals), whose remainder
    is dropped. A conversation longer than a row is cut to the row as it
    enters the buffer (so it fills an empty row). ``counts`` (if given)
    accumulates ``"tokens"`` and ``"pad"``, the row positions filled and
    those that are padding."""
    if overflow not in ("pad", "crop"):
        raise ValueError(f"overflow must be 'pad' or 'crop', got {overflow!r}")
    import torch

    capacity = seq_len + 1
    pool: list = []
    cursor = 0
    while True:
        rows_ids, rows_mask = [], []
        for _ in range(batch_size):
            ids_row: list = []
            mask_row: list = []
            while len(ids_row) < capacity:
                while len(pool) < buffer_size:
                    ids, mask = render(dataset[cursor])
                    pool.append((ids[:capacity], mask[:capacity]))
                    cursor = (cursor + 1) % len(dataset)
                room = capacity - len(ids_row)
                best = -1
                for j, (ids, _) in enumerate(pool):
                    if len(ids) <= room and (best < 0 or len(ids) > len(pool[best][0])):
                        best = j
                if best >= 0:
                    ids, mask = pool.pop(best)
                elif overflow == "crop":
                    shortest = min(range(len(pool)), key=lambda j: len(pool[j][0]))
                    ids, mask = pool.pop(shortest)
                    ids, mask = ids[:room], mask[:room]
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
        yield ids_t[:, :-1].to(torch.int32), targets
