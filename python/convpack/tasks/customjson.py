"""Conversations from a local JSONL file.

Each non-empty line is one conversation: a JSON array of messages
(``[{"role": "user", "content": ...}, {"role": "assistant", ...}]``) or an
object with a ``"messages"`` array. The rules are those of
``convpack.tasks.common.validate_messages``. The whole file is checked when
the task is built: it must be a regular file in UTF-8 (a UTF-8 byte-order
mark is allowed), and a bad line is reported with the file name and line
number (and the byte offset for bad encoding).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

from convpack.tasks.common import Conversation, ConversationFormatError, Task, validate_messages
from convpack.tasks.data import _record_read

__all__ = ["CustomJSON", "SpecialFileError"]

_UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


class SpecialFileError(ValueError):
    """The path is a FIFO, device or socket, not a regular file (never opened for reading)."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _read_regular_file(path: str) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file without blocking."""
    expected = "expected a JSONL file, one JSON array of messages per line"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        # The path once: OSError's str() appends the filename to the message.
        raise FileNotFoundError(errno.ENOENT, f"CustomJSON: no such file ({expected})", path) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, f"CustomJSON: {path!r} is a directory ({expected})", path)
    if not stat.S_ISREG(mode):
        raise SpecialFileError(f"CustomJSON: {path!r} is {_kind(mode)}; {expected} (a regular file)")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, the open
    # still returns at once and the fstat below refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with open(fd, "rb", closefd=True) as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SpecialFileError(f"CustomJSON: {path!r} is {_kind(mode)}; {expected} (a regular file)")
        return f.read()


def _decode(path: str, data: bytes) -> str:
    for bom, encoding in _OTHER_BOMS:
        if data.startswith(bom):
            raise ConversationFormatError(
                f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark); "
                "CustomJSON reads UTF-8, save it as UTF-8"
            )
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
        offset = len(_UTF8_BOM)
    else:
        offset = 0
    nul = data.find(b"\x00")
    if nul >= 0:  # JSON never holds a raw NUL; UTF-16/32 text is full of them
        line = data.count(b"\n", 0, nul) + 1
        raise ConversationFormatError(
            f"{path}, line {line} (byte {nul + offset}): a NUL byte; the file looks like "
            "UTF-16 or UTF-32 without a byte-order mark, CustomJSON reads UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConversationFormatError(
            f"{path}, line {line} (byte {exc.start + offset}): not valid UTF-8: {exc.reason}"
        ) from None


def _lines(text: str) -> list[str]:
    # Only \n, \r\n and \r end a line (as in text mode); str.splitlines would
    # also split at U+2028 and friends, which JSON strings may hold as they are.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


class CustomJSON(Task):
    """``CustomJSON(filepath)``: one conversation per line of a JSONL file.

    Args:
        filepath: the JSONL file (str or path-like).
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        TypeError: if ``filepath`` is not a str or path-like.
        FileNotFoundError: if ``filepath`` does not exist.
        IsADirectoryError: if it is a directory.
        SpecialFileError: if it is a FIFO, device or socket (a ``ValueError``;
            nothing is read, so nothing blocks).
        ConversationFormatError: ``<file>, line <n>: <rule>`` for a line that
            is not valid JSON or breaks the conversation rules, and
            ``<file>, line <n> (byte <b>): not valid UTF-8`` or ``<file>: the
            file is UTF-16`` for a file that is not UTF-8 (a ``ValueError``).
        OSError: if the file cannot be read (permissions, I/O).
    """

    def __init__(self, filepath: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filepath = os.fspath(filepath)
        if isinstance(self.filepath, bytes):
            self.filepath = os.fsdecode(self.filepath)
        _record_read(self.filepath)  # hidden from sandboxed programs
        text = _decode(self.filepath, _read_regular_file(self.filepath))
        self.conversations: list[list[dict[str, Any]]] = []
        for line_number, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            where = f"{self.filepath}, line {line_number}"
            try:
                data = json.loads(line)
            except RecursionError:
                raise ConversationFormatError(f"{where}: JSON nested too deeply") from None
            except ValueError as exc:  # JSONDecodeError, or a number too long to convert
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
        """``"generative"``."""
        return "generative"

    def num_examples(self) -> int:
        """The number of conversations in the file."""
        return self.length

    def get_example(self, index: int) -> Conversation:
        """Conversation ``index`` of the file, as ``{"messages": [...]}``."""
        return {"messages": self.conversations[index]}
