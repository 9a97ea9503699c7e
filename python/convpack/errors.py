"""Exceptions raised by convpack.

The Rust core raises these through one mapping (``rust/convpack-py/src/errors.rs``);
this module must not import the compiled module.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["ConversationError", "TemplateError", "UnknownSpecialTokenError", "VocabularyError"]


class ConversationError(ValueError):
    """A conversation breaks a rule of the conversation format.

    Attributes:
        conversation_index: position of the conversation in the batch or
            dataset, when known.
        message_index: index of the offending message, when the rule is about
            one message.
        reason: the rule that was broken, in words.
    """

    def __init__(
        self,
        message: str,
        conversation_index: Optional[int] = None,
        message_index: Optional[int] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.conversation_index = conversation_index
        self.message_index = message_index
        self.reason = reason if reason is not None else message

    def __reduce__(self):  # keep the attributes across processes
        return (
            type(self),
            (str(self), self.conversation_index, self.message_index, self.reason),
        )


class TemplateError(ConversationError):
    """A chat template cannot render a conversation, or convpack cannot tell
    which of its output an assistant message produced (so no mask is made).

    Attributes:
        template: the template's name.
        (and those of :class:`ConversationError`)
    """

    def __init__(
        self,
        message: str,
        conversation_index: Optional[int] = None,
        message_index: Optional[int] = None,
        reason: Optional[str] = None,
        template: str = "",
    ) -> None:
        super().__init__(message, conversation_index, message_index, reason)
        self.template = template

    def __reduce__(self):
        return (
            type(self),
            (str(self), self.conversation_index, self.message_index, self.reason, self.template),
        )


class VocabularyError(ValueError):
    """A vocabulary or tokenizer file that cannot be read.

    Attributes:
        file: the file.
        line: 1-based line of the problem (0 when it is about the whole file).
        reason: what is wrong.
    """

    def __init__(self, message: str, file: str = "", line: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.reason = reason or message

    def __reduce__(self):
        return (type(self), (str(self), self.file, self.line, self.reason))


class UnknownSpecialTokenError(ValueError, KeyError):
    """A special token name that the tokenizer does not have.

    A ``ValueError`` like every input error of convpack, and a ``KeyError``
    too, so code written for tiktoken's and nanochat's ``KeyError`` keeps
    working.

    Attributes:
        name: the name that was asked for.
    """

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return (type(self), (str(self), self.name))
