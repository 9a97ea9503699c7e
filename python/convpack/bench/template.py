"""Rendering with chat templates: convpack against ``transformers``'
``apply_chat_template`` on the same tokenizer, template and conversations.

Templates: Llama 3's and Qwen 3's, in the shapes the families publish
(``convpack.bench.chat_templates``), over the ``tokenizer.json`` files of
``convpack.bench.hf_files`` (Llama 3 and Qwen 3 ranks, from
``quicktok-v1``). The oracle and baseline is
``PreTrainedTokenizerFast(tokenizer_file=..., chat_template=...)
.apply_chat_template(messages, tokenize=True)`` on one thread, one
conversation at a time; convpack renders with
``ChatTemplate(template)``:

- one by one: ``tokenizer.render_conversation(c, chat_format=template)``;
- batch: ``tokenizer.render_conversations(convs, chat_format=template,
  num_threads=N)`` (numpy arrays out) on 1 thread and on every core.

Conversations: short (MMLU-sized, a question and a one-letter answer) and
long (SmolTalk-like, about 4.7 messages of about 845 characters, some with
a system message). convpack's ids are checked identical to
``apply_chat_template``'s for every conversation before anything is timed
(no truncation: ``max_tokens`` is larger than any conversation). Each round
times every side once, each meeting the text as new (convpack with its
piece cache emptied, ``transformers`` with its backend's BPE word cache
emptied); best of 5 rounds. The unit is conversations per second.
"""

from __future__ import annotations

import os
from typing import Optional

from .chat_templates import TEMPLATES
from .common import check_identical, cold_cache, cpu_count, interleaved, note, row
from .hf_files import built_directory, family_available
from .texts import mmlu_like_conversations, smoltalk_like_conversations

__all__ = ["run", "datasets"]

SECTION = "template"
#: Larger than any benchmark conversation: nothing is truncated.
MAX_TOKENS = 1 << 20


def datasets(quick: bool) -> dict:
    """``{name: conversations}``: MMLU-sized and SmolTalk-like.

    Args:
        quick: 40 short and 15 long conversations instead of 2000 and 500.
    """
    n_short, n_long = (40, 15) if quick else (2000, 500)
    return {
        "short (MMLU-sized)": mmlu_like_conversations(n_short),
        "long (SmolTalk-like)": smoltalk_like_conversations(n_long),
    }


def run(
    quick: bool = False, families: tuple = tuple(TEMPLATES), data: Optional[dict] = None
) -> list:
    """Time the cases above; one row per case (see ``convpack.bench``).

    Args:
        quick: small inputs and one round (a smoke run).
        families: which of ``chat_templates.TEMPLATES`` to render.
        data: ``{name: conversations}`` (default: ``datasets(quick)``).

    Returns:
        Rows in conversations per second (with ``family``, ``dataset`` and
        ``threads``), or notes saying what is missing.

    Raises:
        BenchmarkMismatch: convpack's ids differ from ``apply_chat_template``'s.
    """
    try:
        from transformers import PreTrainedTokenizerFast
    except ModuleNotFoundError:
        return [note(SECTION, "not run: transformers is missing (pip install transformers)")]
    import convpack

    repeats = 1 if quick else 5
    threads = cpu_count()
    data = datasets(quick) if data is None else data
    rows: list = []
    for family in families:
        missing = family_available(family)
        if missing is not None:
            rows.append(note(SECTION, f"{family}: no rows: {missing}"))
            continue
        template, bos, eos = TEMPLATES[family]
        tokens = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
        directory = built_directory(family)
        path = os.path.join(directory, "tokenizer.json")
        hf = PreTrainedTokenizerFast(tokenizer_file=path, chat_template=template, **tokens)
        tokenizer = convpack.Tokenizer.from_hf(directory)
        fmt = convpack.ChatTemplate(template, name=f"{family} chat template", **tokens)
        for name, convs in data.items():
            rows += _rows(family, name, convs, hf, tokenizer, fmt, threads, repeats, not quick)
    return rows


def _rows(family, name, convs, hf, tokenizer, fmt, threads, repeats, warmup) -> list:
    what = f"{family} template, {name}"
    apply = hf.apply_chat_template

    def theirs():
        return [apply(c["messages"], tokenize=True, return_dict=False) for c in convs]

    expected = theirs()
    check_identical(
        what,
        [tokenizer.render_conversation(c, MAX_TOKENS, chat_format=fmt)[0] for c in convs],
        expected,
    )
    for t in sorted({1, threads}):
        ids, _mask, offsets = tokenizer.render_conversations(
            convs, MAX_TOKENS, num_threads=t, chat_format=fmt
        )
        got = [ids[int(offsets[i]) : int(offsets[i + 1])].tolist() for i in range(len(convs))]
        check_identical(f"{what}, render_conversations on {t} threads", got, expected)

    def one_by_one():
        render = cold_cache(tokenizer).render_conversation
        return lambda: [render(c, MAX_TOKENS, chat_format=fmt) for c in convs]

    def batched(t):
        def make():
            tok = cold_cache(tokenizer)
            return lambda: tok.render_conversations(
                convs, MAX_TOKENS, num_threads=t, chat_format=fmt
            )

        return make

    def baseline():
        cold_cache(hf)  # its word cache emptied too: the text is new to both
        return theirs

    makers = {"apply_chat_template": baseline, "one by one": one_by_one}
    for t in sorted({1, threads}):
        makers[f"batch, {t} thread{'s' if t > 1 else ''}"] = batched(t)
    speeds = interleaved(makers, len(convs), repeats, warmup)
    baseline = speeds.pop("apply_chat_template")
    out = []
    for label, speed in speeds.items():
        t = 1 if label == "one by one" else int(label.split(", ")[1].split()[0])
        out.append(
            row(
                SECTION,
                f"{what}, {label}",
                "conv/s",
                speed,
                baseline,
                "transformers apply_chat_template",
                threads=t,
                family=family,
                dataset=name,
            )
        )
    return out
