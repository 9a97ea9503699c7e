"""ARC: grade-school science multiple-choice questions (Easy and Challenge).

https://huggingface.co/datasets/allenai/ai2_arc

Rows have ``question``, ``choices`` (``{"text": [...], "label": [...]}``)
and ``answerKey``. The dataset's own labels are used as the letters (most
rows use A-D, a few A-E or 1-4).
"""

from __future__ import annotations

from typing import Any

from convpack.tasks.common import Conversation, Task, render_mc
from convpack.tasks.data import load_task_dataset

__all__ = ["ARC"]


class ARC(Task):
    """``ARC(subset, split)``: science multiple choice with the dataset's own labels.

    Args:
        subset: ``"ARC-Easy"`` or ``"ARC-Challenge"``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: a local data directory (see ``convpack.tasks.data``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown subset or split.
        DatasetNotFoundError: if the data is in none of the places looked in.
        ImportError: if the data is parquet and pyarrow is missing.
    """

    def __init__(self, subset: str, split: str, data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if subset not in ("ARC-Easy", "ARC-Challenge"):
            raise ValueError(f"ARC subset must be 'ARC-Easy' or 'ARC-Challenge', got {subset!r}")
        if split not in ("train", "validation", "test"):
            raise ValueError(f"ARC split must be 'train', 'validation' or 'test', got {split!r}")
        self.subset = subset
        self.split = split
        self.ds = load_task_dataset("allenai/ai2_arc", subset, split, data_dir)

    @property
    def eval_type(self) -> str:
        """``"categorical"``."""
        return "categorical"

    def num_examples(self) -> int:
        """The number of rows in the split."""
        return len(self.ds)

    def get_example(self, index: int) -> Conversation:
        """The conversation of physical row ``index`` (``render_mc`` prompt,
        answer label), with ``letters``.

        Raises:
            ValueError: if the row's answerKey is not one of its labels.
        """
        row = self.ds[index]
        letters = list(row["choices"]["label"])
        choices = list(row["choices"]["text"])
        answer = row["answerKey"]
        if answer not in letters:
            raise ValueError(
                f"ARC row {index} ({row.get('id')}): answerKey {answer!r} is not one of the labels {letters}"
            )
        return {
            "messages": [
                {"role": "user", "content": render_mc(row["question"], letters, choices)},
                {"role": "assistant", "content": answer},
            ],
            "letters": letters,
        }

    def evaluate(self, conversation: Conversation, assistant_response: str) -> bool:
        """Whether the response is the reference label.

        Args:
            conversation: an example of this task.
            assistant_response: the predicted label.

        Returns:
            bool: True when it equals the reference label.
        """
        return assistant_response == conversation["messages"][-1]["content"]
