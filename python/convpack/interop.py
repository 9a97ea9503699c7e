"""nanochat's tokenizer files, written from a convpack ``Tokenizer``.

nanochat keeps its tokenizer in ``<base>/tokenizer/`` (``<base>`` is
``$NANOCHAT_BASE_DIR`` or ``~/.cache/nanochat``) as two files:

- ``tokenizer.pkl``: a pickled ``tiktoken.Encoding`` (pattern, ranks and
  special tokens), which nanochat's ``RustBPETokenizer.from_directory`` loads;
- ``token_bytes.pt``: a torch int32 tensor with, per token id, the UTF-8
  length of the token's decoded text (0 for special tokens), which nanochat
  uses to report bits per byte.

:meth:`convpack.Tokenizer.save` writes both next to convpack's own format, so
a directory saved by convpack is a nanochat tokenizer directory too. Writing
the pickle needs ``tiktoken`` (the file holds a real ``tiktoken.Encoding``) and
writing the tensor needs ``torch``; when one is missing, that file is skipped
with a :class:`NanochatFilesWarning` naming the package. Reading goes the
other way through :meth:`convpack.Tokenizer.from_directory`, whose restricted
loader executes nothing from the pickle; a pickle that nanochat wrote over
convpack's (its digest differs from the one ``save`` recorded) is the one it
loads.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import warnings
import weakref
from typing import IO, Any, Callable, Optional, TypeVar

from ._atomic import AtomicFiles
from .tasks.data import nanochat_base_dir as _nanochat_base_path

__all__ = [
    "NanochatFilesWarning",
    "TOKENIZER_PKL",
    "TOKEN_BYTES_PT",
    "nanochat_base_dir",
    "nanochat_pickle_replaced",
    "nanochat_tokenizer_dir",
    "from_tiktoken",
    "tiktoken_encoding_of",
    "to_tiktoken",
    "token_byte_lengths",
    "write_nanochat_files",
    "write_token_bytes",
    "write_tokenizer_pkl",
]

#: The file nanochat's ``RustBPETokenizer`` saves and loads.
TOKENIZER_PKL = "tokenizer.pkl"
#: The per-token byte lengths nanochat's tokenizer training writes.
TOKEN_BYTES_PT = "token_bytes.pt"
# convpack's own config (see Tokenizer.save), where the digests are recorded.
_CONFIG = "convpack_tokenizer.json"

# Protocol 4 is what Python 3.8-3.13 write by default and every Python that
# nanochat supports reads.
_PICKLE_PROTOCOL = 4

T = TypeVar("T")


class NanochatFilesWarning(UserWarning):
    """``Tokenizer.save`` skipped one of nanochat's files because the package
    it needs (tiktoken for ``tokenizer.pkl``, torch for ``token_bytes.pt``) is
    not installed. convpack's own format was written all the same."""


def nanochat_base_dir() -> str:
    """nanochat's base directory: ``$NANOCHAT_BASE_DIR`` when set and not
    empty, else ``~/.cache/nanochat``. Created if missing, as nanochat does.

    Returns:
        The directory's path.

    Raises:
        OSError: the directory cannot be created.
    """
    base = str(_nanochat_base_path())
    os.makedirs(base, exist_ok=True)
    return base


def nanochat_tokenizer_dir() -> str:
    """``<base>/tokenizer``, where nanochat saves and looks for its tokenizer
    (see :func:`nanochat_base_dir`; the base is created, this one is not)."""
    return os.path.join(nanochat_base_dir(), "tokenizer")


def to_tiktoken(tokenizer: Any, name: str = "convpack") -> Any:
    """A ``tiktoken.Encoding`` with the tokenizer's pattern, ranks and special
    tokens, so it gives the same ids.

    Args:
        tokenizer: a :class:`convpack.Tokenizer`.
        name: the encoding's name (shown in its repr; nanochat ignores it).

    Returns:
        The ``tiktoken.Encoding``.

    Raises:
        ImportError: tiktoken is not installed.
    """
    try:
        import tiktoken
    except ImportError as e:
        raise ImportError(
            "building a tiktoken.Encoding needs tiktoken: pip install tiktoken"
        ) from e
    return tiktoken.Encoding(
        name,
        pat_str=tokenizer.pattern,
        mergeable_ranks=tokenizer.mergeable_ranks,
        special_tokens=tokenizer.special_tokens,
    )


def tiktoken_encoding_of(obj: Any) -> Any:
    """The ``tiktoken.Encoding`` behind ``obj``: ``obj`` itself, or its
    ``.enc`` (nanochat's ``RustBPETokenizer`` keeps one there); ``None`` when
    there is none. Checked by type, so tiktoken is never imported here."""
    for candidate in (obj, getattr(obj, "enc", None) if not _is_convpack(obj) else None):
        for klass in type(candidate).__mro__:
            if klass.__name__ == "Encoding" and klass.__module__.split(".")[0] == "tiktoken":
                return candidate
    return None


def _is_convpack(obj: Any) -> bool:
    # A convpack Tokenizer's .enc builds a tiktoken twin: never wanted here.
    return type(obj).__module__.split(".")[0] == "convpack"


# Per Encoding object, the convpack tokenizer built from it (an Encoding is
# immutable, so one build serves every generator made with it).
_FROM_TIKTOKEN: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def from_tiktoken(encoding: Any) -> Any:
    """The :class:`convpack.Tokenizer` with a ``tiktoken.Encoding``'s pattern,
    ranks and special tokens, so it gives the same ids; built once per
    encoding object.

    Args:
        encoding: a ``tiktoken.Encoding``, or an object holding one in
            ``.enc`` (nanochat's ``RustBPETokenizer``).

    Returns:
        The ``convpack.Tokenizer``.

    Raises:
        TypeError: ``encoding`` is neither.
        ValueError: the encoding's ranks, specials or pattern cannot be
            reproduced (the message says which).
    """
    from .tokenizer import Tokenizer

    enc = tiktoken_encoding_of(encoding)
    if enc is None:
        raise TypeError(
            f"expected a tiktoken.Encoding or an object with one in .enc, "
            f"got {type(encoding).__name__}"
        )
    try:
        return _FROM_TIKTOKEN[enc]
    except (KeyError, TypeError):
        pass
    tokenizer = Tokenizer.from_ranks(
        enc._mergeable_ranks, pattern=enc._pat_str, special_tokens=dict(enc._special_tokens)
    )
    try:
        _FROM_TIKTOKEN[enc] = tokenizer
    except TypeError:  # not weakly referenceable: built again next time
        pass
    return tokenizer


def token_byte_lengths(tokenizer: Any) -> list:
    """Per token id, what nanochat's tokenizer training records: the length in
    UTF-8 bytes of the token decoded alone (``decode([id])``, where bytes that
    are not valid UTF-8 become U+FFFD, three bytes each), and 0 for special
    tokens and for ids that no token has.

    Args:
        tokenizer: a :class:`convpack.Tokenizer`.

    Returns:
        A list of ``get_vocab_size()`` ints.
    """
    lengths = [0] * tokenizer.get_vocab_size()
    special_names = tokenizer.get_special_tokens()
    # A token's id is its rank; special tokens keep their 0.
    for token_id, token in enumerate(tokenizer._core.ranks()):
        text = token.decode("utf-8", errors="replace")
        # nanochat compares the decoded text with the special tokens' names.
        lengths[token_id] = 0 if text in special_names else len(text.encode("utf-8"))
    return lengths


def write_tokenizer_pkl(tokenizer: Any, directory: str) -> str:
    """Writes ``directory/tokenizer.pkl``: the pickled :func:`to_tiktoken`
    encoding, the file nanochat's ``RustBPETokenizer.from_directory`` loads
    (atomically: see :mod:`convpack._atomic`).

    Returns:
        The file's path.

    Raises:
        ImportError: tiktoken is not installed.
        OSError: the file cannot be written.
    """
    with AtomicFiles(directory) as files:
        files.write(TOKENIZER_PKL, _tokenizer_pkl_writer(tokenizer))
        files.commit()
    return os.path.join(directory, TOKENIZER_PKL)


def _tokenizer_pkl_writer(tokenizer: Any) -> Callable[[IO[bytes]], None]:
    encoding = to_tiktoken(tokenizer)
    return lambda f: pickle.dump(encoding, f, protocol=_PICKLE_PROTOCOL)


def write_token_bytes(tokenizer: Any, directory: str) -> str:
    """Writes ``directory/token_bytes.pt``: :func:`token_byte_lengths` as a
    torch int32 CPU tensor saved with ``torch.save``, as nanochat's tokenizer
    training does (atomically: see :mod:`convpack._atomic`).

    Returns:
        The file's path.

    Raises:
        ImportError: torch is not installed.
        OSError: the file cannot be written.
    """
    with AtomicFiles(directory) as files:
        files.write(TOKEN_BYTES_PT, _token_bytes_writer(tokenizer))
        files.commit()
    return os.path.join(directory, TOKEN_BYTES_PT)


def _token_bytes_writer(tokenizer: Any) -> Callable[[IO[bytes]], None]:
    try:
        import torch
    except ImportError as e:
        raise ImportError("writing token_bytes.pt needs torch: pip install torch") from e
    tensor = torch.tensor(token_byte_lengths(tokenizer), dtype=torch.int32, device="cpu")
    return lambda f: torch.save(tensor, f)


def write_nanochat_files(
    tokenizer: Any, directory: str, write: bool = True, files: Optional[AtomicFiles] = None
) -> dict:
    """Writes ``tokenizer.pkl`` and ``token_bytes.pt`` into ``directory``
    (which must exist). A file whose package is missing is skipped, and one
    :class:`NanochatFilesWarning` names what was skipped and what to install.
    A file that is not written (skipped, or ``write=False``) is removed if an
    older one is there: it would describe another tokenizer.

    Args:
        tokenizer: a :class:`convpack.Tokenizer`.
        directory: where to write.
        write: write the files (``False``: only remove older ones).
        files: stage the files there instead of putting them in place now
            (``Tokenizer.save`` commits them with its own files); ``None``:
            written and put in place here, atomically.

    Returns:
        ``{file name: SHA-256 hex digest}`` of the files written, which
        ``Tokenizer.save`` records so that :func:`nanochat_pickle_replaced`
        can tell its own pickle from one written later by nanochat.

    Raises:
        OSError: a file cannot be written or removed.
    """
    if files is None:
        with AtomicFiles(directory) as own:
            written = write_nanochat_files(tokenizer, directory, write, own)
            own.commit()
        return written
    written, missing = {}, []
    for writer, filename, package in (
        (_tokenizer_pkl_writer, TOKENIZER_PKL, "tiktoken"),
        (_token_bytes_writer, TOKEN_BYTES_PT, "torch"),
    ):
        if write and _importable(package):
            written[filename] = files.write(filename, writer(tokenizer))
            continue
        if write:
            missing.append((filename, package))
        files.remove(filename)
    if missing:
        skipped = ", ".join(f"{filename} (needs {package})" for filename, package in missing)
        packages = " ".join(package for _, package in missing)
        warnings.warn(
            f"{directory}: saved in convpack's format; nanochat's files were skipped: {skipped}. "
            f"pip install {packages} to write them too, or pass nanochat_files=False to "
            "Tokenizer.save to skip them without this warning.",
            NanochatFilesWarning,
            stacklevel=3,
        )
    return written


def nanochat_pickle_replaced(directory: str, config: dict) -> bool:
    """True when ``directory`` holds a ``tokenizer.pkl`` that is not the one
    ``Tokenizer.save`` recorded in ``config`` (the parsed
    ``convpack_tokenizer.json``; nanochat saved another tokenizer over it):
    the pickle is then the tokenizer to load. False without a
    ``tokenizer.pkl``. A ``tokenizer.pkl`` that is not a regular file counts
    as replaced without being opened (the loader then refuses it), so a FIFO
    never blocks."""
    pkl = os.path.join(directory, TOKENIZER_PKL)
    if not os.path.lexists(pkl):
        return False
    if not os.path.isfile(pkl) or os.path.islink(pkl):
        return True
    recorded = config.get("nanochat_files")
    if not isinstance(recorded, dict) or not isinstance(recorded.get(TOKENIZER_PKL), str):
        return True
    return bool(_sha256(pkl) != recorded[TOKENIZER_PKL])


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True
