"""Conversations from a local JSONL file.

Each non-empty line is one conversation: a JSON array of messages
(``[{"role": "user", "content": ...}, {"role": "assistant", ...}]``) or an
object with a ``"messages"`` array. The rules are those of
``tasks.common.validate_messages``; the file is checked when the task is
built, and a bad line is reported with the file name and line number.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tasks.common import Conversation, ConversationFormatError, Task, validate_messages

__all__ = ["CustomJSON"]


class CustomJSON(Task):
    """``CustomJSON(filepath)``: one conversation per line of a JSONL file.

    Raises:
        FileNotFoundError: if ``filepath`` does not exist.
        ConversationFormatError: ``<file>, line <n>: <rule>`` for a bad line.
    """

    def __init__(self, filepath: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filepath = os.fspath(filepath)
        if not os.path.isfile(self.filepath):
            raise FileNotFoundError(
                f"CustomJSON: no such file {self.filepath!r} (expected a JSONL file, one JSON array of messages per line)"
            )
        self.conversations: list[list[dict[str, Any]]] = []
        with open(self.filepath, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.filepath}, line {line_number}"
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConversationFormatError(f"{where}: not valid JSON ({exc})") from None
                if isinstance(data, dict):
                    if "messages" not in data:
                        raise ConversationFormatError(f"{where}: an object must have a 'messages' array")
                    data = data["messages"]
                if not isinstance(data, list):
                    raise ConversationFormatError(
                        f"{where}: expected a JSON array of messages, got {type(data).__name__}"
                    )
                try:
                    validate_messages(data)
                except ConversationFormatError as exc:
                    raise ConversationFormatError(f"{where}: {exc}") from None
                self.conversations.append(data)
        self.length = len(self.conversations)

    @property
    def eval_type(self) -> str:
        return "generative"

    def num_examples(self) -> int:
        return self.length

    def get_example(self, index: int) -> Conversation:
        return {"messages": self.conversations[index]}
