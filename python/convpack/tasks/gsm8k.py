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

from convpack.tasks.common import Conversation, Task
from convpack.tasks.data import load_task_dataset

__all__ = ["GSM8K", "GSM_RE", "answer_to_parts", "extract_answer"]

GSM_RE = re.compile(r"#### (-?[0-9.,]+)")
"""The final answer marker: ``#### `` then an optional minus and digits, dots, commas."""
_CALL_RE = re.compile(r"<<([^>]+)>>")


def extract_answer(completion: str) -> str | None:
    """The final answer of a GSM8K-style solution (the official normalisation).

    Args:
        completion: a reference solution or a model's response.

    Returns:
        The text matched after the first ``#### `` (``GSM_RE``) with commas
        removed (``"1,234"`` -> ``"1234"``), or None when there is no marker.

    Raises:
        TypeError: if ``completion`` is not a string.
    """
    match = GSM_RE.search(completion)
    if match is None:
        return None
    return match.group(1).strip().replace(",", "")


def answer_to_parts(answer: str) -> list[dict[str, str]]:
    """Split a GSM8K answer into text / python / python_output parts.

    Text between calls is kept even when empty, so every call sits between
    two text parts. A call ``<<expr=result>>`` is split on its last ``=``
    (the expression itself may contain ``=``); a call without ``=`` has an
    empty output.

    Args:
        answer: the ``answer`` column of a GSM8K row.

    Returns:
        The assistant content: a list of ``{"type", "text"}`` parts.
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
    """``GSM8K(subset="main" | "socratic", split="train" | "test")``: math word problems.

    Args:
        subset: ``"main"`` or ``"socratic"`` (the hub configs).
        split: ``"train"`` or ``"test"``.
        data_dir: a local data directory (see ``convpack.tasks.data``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown subset or split.
        DatasetNotFoundError: if the data is in none of the places looked in.
        ImportError: if the data is parquet and pyarrow is missing.
    """

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
        """``"generative"``."""
        return "generative"

    def num_examples(self) -> int:
        """The number of rows in the split."""
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        """The conversation of physical row ``index``: question, then the
        worked answer as text / python / python_output parts."""
        row = self.ds[index]
        return {
            "messages": [
                {"role": "user", "content": row["question"]},
                {"role": "assistant", "content": answer_to_parts(row["answer"])},
            ]
        }

    def evaluate(self, conversation: Conversation, assistant_response: str) -> int:
        """Score a response against the reference answer.

        Args:
            conversation: an example of this task (its last message is the
                reference assistant answer).
            assistant_response: the model's text.

        Returns:
            1 if the response's ``#### n`` equals the reference's, else 0 (also
            0 when the reference has no ``####``).

        Raises:
            TypeError: if ``assistant_response`` is not a string.
            ValueError: if the last message is not the assistant's.
        """
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
        """The evaluation as a float reward for RL.

        Returns:
            1.0 or 0.0, as ``evaluate``; raises as ``evaluate``.
        """
        return float(self.evaluate(conversation, assistant_response))
