"""nanochat's names for convpack's classes, so a nanochat script changes one import.

::

    # before                                             # after
    from nanochat.tokenizer import get_tokenizer         from convpack.nanochat import get_tokenizer
    from nanochat.tokenizer import RustBPETokenizer      from convpack.nanochat import RustBPETokenizer
    from nanochat.execution import execute_code          from convpack.nanochat import execute_code

This module only maps names: the behaviour lives in :class:`convpack.Tokenizer`,
:mod:`convpack.interop` (nanochat's files and directories) and
:mod:`convpack.execution` (the sandbox). The README's "Differences from
nanochat" table lists what knowingly differs.
"""

from __future__ import annotations

import io
import os
from functools import cached_property
from typing import Any, cast

from ._pickle import read_regular_file
from .execution import ExecutionResult, execute_code
from .interop import (
    TOKEN_BYTES_PT,
    nanochat_base_dir,
    nanochat_tokenizer_dir,
    to_tiktoken,
)
from .tokenizer import CHAT_SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

#: The most bytes ``get_token_bytes`` reads: an int32 per token plus torch's
#: zip framing, for vocabularies far past any in use.
TOKEN_BYTES_LIMIT = 64 << 20

__all__ = [
    "ExecutionResult",
    "RustBPETokenizer",
    "SPECIAL_TOKENS",
    "SPLIT_PATTERN",
    "execute_code",
    "get_base_dir",
    "get_token_bytes",
    "get_tokenizer",
]

#: The chat special tokens in id order (a list, as nanochat has it).
SPECIAL_TOKENS: list = list(CHAT_SPECIAL_TOKENS)

#: nanochat's ``get_base_dir``: ``$NANOCHAT_BASE_DIR`` or ``~/.cache/nanochat``.
get_base_dir = nanochat_base_dir


class RustBPETokenizer(Tokenizer):
    """:class:`convpack.Tokenizer` under nanochat's name, with nanochat's
    constructors: ``train_from_iterator(iterator, vocab_size)`` (vocab_size
    counts the special tokens), ``from_directory(dir)`` (reads nanochat's
    ``tokenizer.pkl`` safely, or convpack's format), ``from_pretrained(name)``
    and ``save(dir)`` (writes ``tokenizer.pkl`` and ``token_bytes.pt`` too).
    Every other method is :class:`convpack.Tokenizer`'s.
    """

    @property
    def bos_token_id(self) -> int:
        """The id of the BOS token (nanochat's attribute; :meth:`get_bos_token_id`)."""
        return self.get_bos_token_id()

    @cached_property
    def enc(self) -> Any:
        """A ``tiktoken.Encoding`` with the same ids (nanochat's attribute),
        built on first use. Raises ``ImportError`` without tiktoken."""
        return to_tiktoken(self)


def get_tokenizer() -> RustBPETokenizer:
    """The tokenizer in ``$NANOCHAT_BASE_DIR/tokenizer`` (default
    ``~/.cache/nanochat/tokenizer``), where nanochat's ``tok_train.py`` saves it.

    Raises:
        FileNotFoundError: no tokenizer there.
        VocabularyError: a file there is corrupt.
    """
    directory = nanochat_tokenizer_dir()
    try:
        return cast(RustBPETokenizer, RustBPETokenizer.from_directory(directory))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc} (nanochat's tokenizer directory: $NANOCHAT_BASE_DIR/tokenizer, "
            f"NANOCHAT_BASE_DIR={os.environ.get('NANOCHAT_BASE_DIR', '<unset>, so ~/.cache/nanochat')}; "
            "nanochat's tok_train.py saves a tokenizer there)"
        ) from exc


def get_token_bytes(device: Any = "cpu") -> Any:
    """The per-token byte lengths (a torch int32 tensor on ``device``) from
    ``$NANOCHAT_BASE_DIR/tokenizer/token_bytes.pt``, loaded with
    ``weights_only=True``.

    Raises:
        FileNotFoundError: the file is missing (``Tokenizer.save`` with torch
            installed writes it, as does nanochat's ``tok_train.py``).
        VocabularyError: the path is not a regular file (a FIFO, a device)
            or is larger than ``TOKEN_BYTES_LIMIT``.
        ImportError: torch is not installed.
    """
    import torch

    path = os.path.join(nanochat_tokenizer_dir(), TOKEN_BYTES_PT)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found (the directory is $NANOCHAT_BASE_DIR/tokenizer): "
            "Tokenizer.save(dir) writes it when torch is installed "
            "(as nanochat's tok_train.py does)"
        )
    # Read like the tokenizer files: a FIFO or device there is refused instead
    # of blocking forever, and the size is bounded before torch sees it.
    data = read_regular_file(path, TOKEN_BYTES_LIMIT, "token_bytes.pt file")
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
