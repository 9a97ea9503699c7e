"""SmolTalk: general multi-turn chat conversations.

https://huggingface.co/datasets/HuggingFaceTB/smol-smoltalk

Rows have ``messages`` (an optional system message, then user and assistant
alternating). Conversations are used as they are, after validation.
"""

from __future__ import annotations

from typing import Any

from convpack.tasks.common import Conversation, ConversationFormatError, Task, validate_messages
from convpack.tasks.data import load_task_dataset

__all__ = ["SmolTalk"]


class SmolTalk(Task):
    """``SmolTalk(split="train" | "test")``: general chat conversations.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: a local data directory (see ``convpack.tasks.data``).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown split.
        DatasetNotFoundError: if the data is in none of the places looked in.
        ImportError: if the data is parquet and pyarrow is missing.
    """

    def __init__(self, split: str, data_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"SmolTalk split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.ds = load_task_dataset("HuggingFaceTB/smol-smoltalk", "default", split, data_dir)
        self.length = len(self.ds)

    @property
    def eval_type(self) -> str:
        """``"generative"``."""
        return "generative"

    def num_examples(self) -> int:
        """The number of rows in the split."""
        return self.length

    def get_example(self, index: int) -> Conversation:
        """The conversation of physical row ``index``, as it is.

        Raises:
            ConversationFormatError: naming the example and the rule when the
                messages break the conversation rules (string content only).
        """
        messages = self.ds[index]["messages"]
        try:
            validate_messages(messages)
            for i, message in enumerate(messages):
                if not isinstance(message["content"], str):
                    raise ConversationFormatError(f"message {i}: content must be a string")
        except ConversationFormatError as exc:
            raise ConversationFormatError(f"SmolTalk(split={self.split!r}) example {index}, {exc}") from None
        return {"messages": messages}
