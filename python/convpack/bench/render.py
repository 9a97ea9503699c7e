"""Rendering throughput: convpack against the pure-Python render.

The baseline (``convpack.bench.baseline.PythonRenderer``) is
``render_conversation`` as nanochat writes it: tiktoken ``encode_ordinary``
per message and Python lists. Both sides use cl100k_base's ranks with
nanochat's split pattern and the chat special tokens.

Conversations: short ones (SpellingBee's, with python parts, and MMLU-sized
multiple choice) and long ones shaped like SmolTalk (about 4.7 messages of
about 845 characters). Cases:

- one by one: ``tokenizer.render_conversation(c)`` per conversation;
- batch: ``tokenizer.render_conversations(convs, num_threads=N)`` (numpy
  arrays out) on 1 thread and on every core.

Outputs are checked to be identical (ids and masks) before timing. Each
timed round is one pass with a freshly built convpack tokenizer (an empty
piece cache). The unit is conversations per second.
"""

from __future__ import annotations

from .baseline import PythonRenderer
from .common import check_identical, cl100k_path, cold_cache, compare, cpu_count, row, tiktoken_twin
from .texts import mmlu_like_conversations, smoltalk_like_conversations, spellingbee_conversations

__all__ = ["run", "datasets"]

SECTION = "render"


def datasets(quick: bool) -> dict:
    """The conversations the benchmark renders.

    Args:
        quick: 500 short and 150 long conversations instead of 5000 and 2000.

    Returns:
        ``{name: conversations}``: short ones (SpellingBee and MMLU-sized)
        and long SmolTalk-like ones, the same on every machine.
    """
    n_short = 500 if quick else 5000
    n_long = 150 if quick else 2000
    short = spellingbee_conversations(n_short // 2) + mmlu_like_conversations(
        n_short - n_short // 2
    )
    return {
        "short (SpellingBee + MMLU-sized)": short,
        "long (SmolTalk-like)": smoltalk_like_conversations(n_long),
    }


def _split(ids, mask, offsets) -> list:
    out = []
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        out.append((ids[a:b].tolist(), mask[a:b].tolist()))
    return out


def run(quick: bool = False) -> list[dict]:
    """Time the cases above; one row per case (see ``convpack.bench``).

    Args:
        quick: small inputs and one round (a smoke run).

    Returns:
        The rows, in conversations per second, with ``threads`` and ``dataset``.

    Raises:
        BenchmarkMismatch: if convpack's ids or masks differ from the baseline's.
    """

    import convpack

    path = cl100k_path()
    tokenizer = convpack.Tokenizer.from_tiktoken_file(
        path, pattern=convpack.SPLIT_PATTERN, special_tokens=convpack.CHAT_SPECIAL_TOKENS
    )
    enc = tiktoken_twin(tokenizer, "bench-nanochat")
    python = PythonRenderer.from_tiktoken(enc)
    repeats = 1 if quick else 5
    threads = cpu_count()
    rows: list[dict] = []
    for name, convs in datasets(quick).items():
        n = len(convs)
        expected = [python.render_conversation(c) for c in convs]
        check_identical(
            f"render {name}", [tokenizer.render_conversation(c) for c in convs], expected
        )
        for t in sorted({1, threads}):
            got = _split(*tokenizer.render_conversations(convs, num_threads=t))
            check_identical(f"render_conversations {name}, {t} threads", got, expected)

        def py_all(convs=convs):
            return [python.render_conversation(c) for c in convs]

        def one_by_one(convs=convs):
            tok = cold_cache(tokenizer)
            return lambda: [tok.render_conversation(c) for c in convs]

        def batched(t, convs=convs):
            tok = cold_cache(tokenizer)
            return lambda: tok.render_conversations(convs, num_threads=t)

        cases = [("one by one", 1, one_by_one)]
        for t in sorted({1, threads}):
            cases.append((f"batch, {t} thread{'s' if t > 1 else ''}", t, lambda t=t: batched(t)))
        for label, t, make in cases:
            ours, baseline = compare(make, py_all, n, repeats)
            rows.append(
                row(
                    SECTION,
                    f"{name}, {label}",
                    "conv/s",
                    ours,
                    baseline,
                    "pure Python",
                    threads=t,
                    dataset=name,
                )
            )
    return rows
