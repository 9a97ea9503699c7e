"""The texts of conversations, for training a tokenizer on a dataset."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["conversation_texts"]


def conversation_texts(conversations: Iterable[Any]) -> Iterator[str]:
    """Yields the text of every message of every conversation, in order: a
    string content as it is, a list of parts as one text per part (``text``,
    ``python`` and ``python_output`` alike), each part separately because
    rendering encodes each part separately.

    Raises:
        TypeError: a conversation, message or part that is not shaped as
            rendering expects (naming the conversation and message).
    """
    for c, conversation in enumerate(conversations):
        messages = conversation.get("messages") if isinstance(conversation, dict) else None
        if not isinstance(messages, list):
            raise TypeError(f"conversation {c}: expected a dict with a 'messages' list")
        for m, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                yield content
            elif isinstance(content, list):
                for p, part in enumerate(content):
                    text = part.get("text") if isinstance(part, dict) else None
                    if not isinstance(text, str):
                        raise TypeError(
                            f"conversation {c}, message {m}: part {p} has no str 'text'")
                    yield text
            else:
                raise TypeError(
                    f"conversation {c}, message {m}: content must be a str or a list of parts, "
                    f"got {type(content).__name__}")
