"""Reading tokenizer files from untrusted sources, in bounded time and memory.

* :func:`read_regular_file` refuses FIFOs, devices and directories without
  blocking on them, and files larger than a limit, before reading anything.
* :func:`load_encoding_state` reads nanochat's ``tokenizer.pkl`` (a pickled
  ``tiktoken.Encoding``) without executing pickle code. Unpickling normally
  imports and calls whatever the file names; this loader resolves exactly one
  global, ``tiktoken.core.Encoding``, to an inert placeholder that only
  records the state the pickle hands to it, and refuses everything else.
  Before that, every opcode is checked, so that no length or memo index in
  the file makes the unpickler allocate more than the file's own size.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import reprlib
import stat
from typing import Any

from . import _core
from .errors import VocabularyError

__all__ = ["MAX_PICKLE_BYTES", "MAX_SPECIAL_TOKENS", "load_encoding_state", "read_regular_file", "short_repr"]

#: Largest ``tokenizer.pkl`` read (a pickled o200k_base is about 4 MB).
MAX_PICKLE_BYTES = 256 << 20
#: Most special tokens a pickled Encoding may hold (the core's bound, checked
#: here to name the file and field).
MAX_SPECIAL_TOKENS: int = _core.MAX_SPECIAL_TOKENS
#: Deepest nesting of MARK-delimited containers in a pickle (an Encoding's
#: state needs 3).
MAX_PICKLE_NESTING = 64

_ALLOWED = {("tiktoken.core", "Encoding"), ("tiktoken", "Encoding")}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 40


def short_repr(obj: Any) -> str:
    """A repr of at most a few hundred characters, however big or deeply
    self-referencing ``obj`` is (for error messages about untrusted data)."""
    return _repr.repr(obj)


def read_regular_file(path: str, limit: int, what: str = "file") -> bytes:
    """The contents of the regular file ``path``, at most ``limit`` bytes.

    The file is opened without blocking (a FIFO with no writer would
    otherwise wait forever) and checked with ``fstat`` before any read.

    Raises:
        FileNotFoundError, PermissionError: from the operating system.
        VocabularyError: ``path`` is not a regular file (a FIFO, a device, a
            socket, a directory) or is larger than ``limit`` bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, device or socket"
            raise VocabularyError(
                f"{path}: the {what} is {kind}, not a regular file; refusing to read it", path
            )
        if st.st_size > limit:
            raise VocabularyError(
                f"{path}: the {what} has {st.st_size} bytes, more than the {limit} a {what} may have",
                path,
            )
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise VocabularyError(
                    f"{path}: the {what} grew past {limit} bytes while being read", path
                )
        return b"".join(chunks)
    finally:
        os.close(fd)


class _EncodingState:
    """Stands in for ``tiktoken.Encoding``; stores the pickled state."""

    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            self.state = dict(kwargs) if kwargs else args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _EncodingState
        raise VocabularyError(
            f"{self._path}: refusing to load global {short_repr(module)}.{short_repr(name)}: "
            "a tokenizer.pkl may only contain a tiktoken.Encoding and plain data",
            self._path,
            0,
            "disallowed global",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise VocabularyError(f"{self._path}: persistent ids are not allowed", self._path)


def _check_opcodes(data: bytes, path: str) -> None:
    """Walks the opcodes (pure parsing, nothing built): every length must fit
    in the data, memo indices must be ones a pickler could have written, and
    containers may nest only so deep."""
    depth = 0
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(data)):
            if op.name == "MARK":
                depth += 1
                if depth > MAX_PICKLE_NESTING:
                    raise VocabularyError(
                        f"{path}: containers nest deeper than {MAX_PICKLE_NESTING} levels", path
                    )
            elif pickletools.markobject in op.stack_before:
                depth -= 1
            elif op.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= count):
                raise VocabularyError(f"{path}: memo index {short_repr(arg)} at byte {pos} is out of range", path)
            elif op.name == "FRAME" and arg > len(data) - (pos or 0):
                raise VocabularyError(f"{path}: a frame at byte {pos} claims {arg} bytes past the end", path)
    except VocabularyError:
        raise
    except Exception as e:  # truncated or malformed opcode stream
        raise VocabularyError(f"{path}: not a readable pickle ({short_repr(e)})", path, 0, str(e)) from None


def load_encoding_state(path: str) -> dict:
    """Returns ``{"name", "pat_str", "mergeable_ranks", "special_tokens"}``.

    Raises:
        VocabularyError: the file is not a regular file of at most
            ``MAX_PICKLE_BYTES``, not a pickled tiktoken.Encoding with its
            state inline, or a field has the wrong type.
    """
    data = read_regular_file(path, MAX_PICKLE_BYTES, "tokenizer.pkl")
    _check_opcodes(data, path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except VocabularyError:
        raise
    except Exception as e:  # a corrupt or truncated pickle
        raise VocabularyError(f"{path}: not a readable pickle ({short_repr(e)})", path, 0, str(e)) from None
    if not isinstance(obj, _EncodingState):
        raise VocabularyError(
            f"{path}: expected a pickled tiktoken.Encoding, found {type(obj).__name__}", path
        )
    state = obj.state
    if isinstance(state, str):
        raise VocabularyError(
            f"{path}: the pickle names the registered tiktoken encoding {short_repr(state)} instead "
            "of holding its ranks; load it with Tokenizer.from_pretrained instead",
            path,
        )
    if not isinstance(state, dict):
        raise VocabularyError(f"{path}: unexpected Encoding state {type(state).__name__}", path)
    checks = {
        "pat_str": str,
        "mergeable_ranks": dict,
        "special_tokens": dict,
    }
    for field, typ in checks.items():
        if not isinstance(state.get(field), typ):
            raise VocabularyError(
                f"{path}: field {field!r} must be a {typ.__name__}, "
                f"got {type(state.get(field)).__name__}",
                path,
            )
    # Checked before anything is built from them (see MAX_SPECIAL_TOKENS).
    if len(state["special_tokens"]) > MAX_SPECIAL_TOKENS:
        raise VocabularyError(
            f"{path}: field 'special_tokens' has {len(state['special_tokens'])} entries, more than "
            f"the {MAX_SPECIAL_TOKENS} special tokens a tokenizer may have",
            path,
        )
    for k, v in state["special_tokens"].items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int):
            raise VocabularyError(
                f"{path}: field 'special_tokens' must map str to int, found "
                f"{short_repr(k)}: {short_repr(v)}",
                path,
            )
    return state
