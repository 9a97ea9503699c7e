"""GSM8K: grade-school math word problems with calculator annotations.

https://huggingface.co/datasets/openai/gsm8k

Rows have ``question`` and ``answer``. The answer's worked solution contains
calculator calls such as ``<<48/2=24>>``; each becomes a ``python`` part
(``48/2``) and a ``python_output`` part (``24``) so the model learns to call
the tool. The final answer follows ``#### ``.
"""

from __future__ import annotations

import re
from typing import Any

from tasks.common import Conversation, Task
from tasks.data import load_task_dataset

__all__ = ["GSM8K", "extract_answer"]

_ANSWER_RE = re.compile(r"#### (-?[0-9.,]+)")
_CALL_RE = re.compile(r"<<([^>]+)>>")


def extract_answer(completion: str) -> str | None:
    """The number after the first ``#### `` with commas removed, or None."""
    match = _ANSWER_RE.search(completion)
    if match is None:
        return None
    return match.group(1).strip().replace(",", "")


def answer_to_parts(answer: str) -> list[dict[str, str]]:
    """Split a GSM8K answer into text / python / python_output parts.

    Text between calls is kept even when empty, so every call sits between
    two text parts. A call ``<<expr=result>>`` is split on its last ``=``
    (the expression itself may contain ``=``); a call without ``=`` has an
    empty output.
    """
    parts: list[dict[str, str]] = []
    position = 0
    for match in _CALL_RE.finditer(answer):
        parts.append({"type": "text", "text": answer[position : match.start()]})
        inner = match.group(1)
        expr, sep, result = inner.rpartition("=")
        if not sep:
            expr, result = inner, ""
        parts.append({"type": "python", "text": expr})
        parts.append({"type": "python_output", "text": result})
        position = match.end()
    parts.append({"type": "text", "text": answer[position:]})
    return parts


class GSM8K(Task):
    """``GSM8K(subset="main" | "socratic", split="train" | "test")``."""

    def __init__(self, subset: str, split: str, data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if subset not in ("main", "socratic"):
            raise ValueError(f"GSM8K subset must be 'main' or 'socratic', got {subset!r}")
        if split not in ("train", "test"):
            raise ValueError(f"GSM8K split must be 'train' or 'test', got {split!r}")
        self.subset = subset
        self.split = split
        self.ds = load_task_dataset("openai/gsm8k", subset, split, data_dir)

    @property
    def eval_type(self) -> str:
        return "generative"

    def num_examples(self) -> int:
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        row = self.ds[index]
        return {
            "messages": [
                {"role": "user", "content": row["question"]},
                {"role": "assistant", "content": answer_to_parts(row["answer"])},
            ]
        }

    def evaluate(self, conversation: Conversation, assistant_response: str) -> int:
        """1 if the response's ``#### n`` equals the reference's, else 0."""
        if not isinstance(assistant_response, str):
            raise TypeError(f"assistant_response must be a str, got {type(assistant_response).__name__}")
        reference = conversation["messages"][-1]
        if reference["role"] != "assistant":
            raise ValueError("the conversation's last message must be the reference assistant answer")
        content = reference["content"]
        last_text = content[-1]["text"] if isinstance(content, list) else content
        ref = extract_answer(last_text)
        pred = extract_answer(assistant_response)
        return int(ref is not None and pred == ref)

    def reward(self, conversation: Conversation, assistant_response: str) -> float:
        """The evaluation as a float reward (1.0 or 0.0) for RL."""
        return float(self.evaluate(conversation, assistant_response))
