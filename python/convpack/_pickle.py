"""Reading nanochat's ``tokenizer.pkl`` without executing pickle code.

The file is a pickled ``tiktoken.Encoding``. Unpickling normally imports and
calls whatever the file names; this loader resolves exactly one global,
``tiktoken.core.Encoding``, to an inert placeholder that only records the
state the pickle hands to it, and refuses everything else before it runs.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from .errors import VocabularyError

_ALLOWED = {("tiktoken.core", "Encoding"), ("tiktoken", "Encoding")}


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
            f"{self._path}: refusing to load global {module}.{name}: a tokenizer.pkl may only "
            "contain a tiktoken.Encoding and plain data",
            self._path,
            0,
            f"disallowed global {module}.{name}",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise VocabularyError(f"{self._path}: persistent ids are not allowed", self._path)


def load_encoding_state(path: str) -> dict:
    """Returns ``{"name", "pat_str", "mergeable_ranks", "special_tokens"}``.

    Raises:
        VocabularyError: the file is not a pickled tiktoken.Encoding with its
            state inline, or a field has the wrong type.
    """
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except VocabularyError:
        raise
    except Exception as e:  # a corrupt or truncated pickle
        raise VocabularyError(f"{path}: not a readable pickle ({e})", path, 0, str(e)) from None
    if not isinstance(obj, _EncodingState):
        raise VocabularyError(
            f"{path}: expected a pickled tiktoken.Encoding, found {type(obj).__name__}", path
        )
    state = obj.state
    if isinstance(state, str):
        raise VocabularyError(
            f"{path}: the pickle names the registered tiktoken encoding {state!r} instead of "
            "holding its ranks; load that encoding's .tiktoken file with "
            "Tokenizer.from_tiktoken_file instead",
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
    for k, v in state["mergeable_ranks"].items():
        if not isinstance(k, bytes) or not isinstance(v, int):
            raise VocabularyError(
                f"{path}: field 'mergeable_ranks' must map bytes to int, found {k!r}: {v!r}", path
            )
    for k, v in state["special_tokens"].items():
        if not isinstance(k, str) or not isinstance(v, int):
            raise VocabularyError(
                f"{path}: field 'special_tokens' must map str to int, found {k!r}: {v!r}", path
            )
    return state
