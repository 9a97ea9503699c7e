"""``convpack.Tokenizer``: nanochat's tokenizer API over the Rust core."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Optional, Union

import numpy as np

from . import _core
from ._pickle import load_encoding_state
from .errors import VocabularyError
from .interop import nanochat_pickle_replaced, write_nanochat_files

__all__ = ["Tokenizer", "SPLIT_PATTERN", "CL100K_PATTERN", "CHAT_SPECIAL_TOKENS"]

#: nanochat's split pattern (GPT-4's with numbers in groups of at most two).
SPLIT_PATTERN: str = _core.SPLIT_PATTERN
#: cl100k_base's split pattern.
CL100K_PATTERN: str = _core.CL100K_PATTERN
#: The chat special tokens, in the order their ids follow the merge ranks.
CHAT_SPECIAL_TOKENS: tuple = tuple(_core.CHAT_SPECIAL_TOKENS)

_CONFIG = "convpack_tokenizer.json"
_RANKS = "tokenizer.tiktoken"
_FORMAT = "convpack-tokenizer"

Conversation = dict
TokenLike = Union[int, str]


def _threads(num_threads: Optional[int]) -> int:
    if num_threads is None:
        return 0
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None (all), got {num_threads}")
    return int(num_threads)


def _chat_specials(n_ranks: int) -> list:
    return [(name, n_ranks + i) for i, name in enumerate(CHAT_SPECIAL_TOKENS)]


class Tokenizer:
    """A byte-level BPE tokenizer with chat special tokens.

    Ids are identical to ``tiktoken``'s for the same split pattern, ranks and
    special tokens. The API follows nanochat's tokenizer so training scripts
    keep working; batch work runs on Rust threads without the GIL.
    """

    def __init__(self, core: _core.CoreTokenizer) -> None:
        self._core = core
        self.encode_special = lru_cache(maxsize=64)(self._encode_special)

    # ----------------------------------------------------------- constructors

    @classmethod
    def from_ranks(
        cls,
        mergeable_ranks: Union[dict, Sequence[bytes]],
        pattern: str = SPLIT_PATTERN,
        special_tokens: Optional[Union[dict, Sequence[str]]] = None,
    ) -> Tokenizer:
        """From ranks (``{bytes: rank}`` or token bytes by rank).

        ``special_tokens``: ``{name: id}``, or names that get ids right after
        the ranks; ``None`` means the chat special tokens.
        """
        if isinstance(mergeable_ranks, dict):
            ranks = _ranks_from_dict(mergeable_ranks, "mergeable_ranks")
        else:
            ranks = list(mergeable_ranks)
        return cls(_core.CoreTokenizer.from_ranks(ranks, _specials(special_tokens, len(ranks)), pattern))

    @classmethod
    def from_tiktoken_file(
        cls,
        path: Union[str, os.PathLike],
        pattern: str = SPLIT_PATTERN,
        special_tokens: Optional[Union[dict, Sequence[str]]] = None,
    ) -> Tokenizer:
        """From a tiktoken rank file (``<base64 token> <rank>`` per line).

        ``special_tokens=None`` adds the chat special tokens, in
        ``CHAT_SPECIAL_TOKENS`` order, with ids right after the ranks.

        Raises:
            VocabularyError: naming the file and line of a corrupt entry.
        """
        path = os.fspath(path)
        with open(path, "rb") as f:
            contents = f.read()
        if special_tokens is None:
            return cls(_core.CoreTokenizer.from_tiktoken(contents, path, None, pattern))
        ranks = _core.CoreTokenizer.parse_tiktoken(contents, path)
        return cls(_core.CoreTokenizer.from_ranks(ranks, _specials(special_tokens, len(ranks)), pattern))

    @classmethod
    def from_directory(cls, directory: Union[str, os.PathLike]) -> Tokenizer:
        """Loads what :meth:`save` wrote, or a nanochat tokenizer directory.

        A nanochat directory holds ``tokenizer.pkl``, a pickled
        ``tiktoken.Encoding``; it is read by a restricted loader that accepts
        only that object's state and executes nothing. When both formats are
        there, the pickle wins unless it is the one :meth:`save` wrote (so a
        tokenizer nanochat saved over convpack's is the one loaded).

        Raises:
            FileNotFoundError: neither format is in the directory.
            VocabularyError: a file is corrupt or the pickle holds anything else.
        """
        directory = os.fspath(directory)
        config_path = os.path.join(directory, _CONFIG)
        if os.path.exists(config_path) and not nanochat_pickle_replaced(directory):
            try:
                with open(config_path, encoding="utf-8") as f:
                    config = json.load(f)
            except (OSError, ValueError) as e:
                raise VocabularyError(f"{config_path}: not valid JSON ({e})", config_path) from None
            if not isinstance(config, dict) or config.get("format") != _FORMAT:
                raise VocabularyError(f"{config_path}: not a convpack tokenizer config", config_path)
            for field, typ in (("pattern", str), ("special_tokens", list)):
                if not isinstance(config.get(field), typ):
                    raise VocabularyError(
                        f"{config_path}: field {field!r} must be a {typ.__name__}", config_path
                    )
            specials = {}
            for item in config["special_tokens"]:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                        and isinstance(item[1], int)):
                    raise VocabularyError(
                        f"{config_path}: field 'special_tokens' must hold [name, id] pairs, "
                        f"found {item!r}",
                        config_path,
                    )
                specials[item[0]] = item[1]
            return cls.from_tiktoken_file(
                os.path.join(directory, _RANKS), pattern=config["pattern"], special_tokens=specials
            )
        pkl = os.path.join(directory, "tokenizer.pkl")
        if os.path.exists(pkl):
            state = load_encoding_state(pkl)
            ranks = _ranks_from_dict(state["mergeable_ranks"], f"{pkl}: mergeable_ranks")
            return cls(
                _core.CoreTokenizer.from_ranks(
                    ranks, list(state["special_tokens"].items()), state["pat_str"]
                )
            )
        raise FileNotFoundError(
            f"no tokenizer in {directory!r}: expected {_CONFIG} (written by Tokenizer.save) "
            "or tokenizer.pkl (a nanochat tokenizer directory)"
        )

    @classmethod
    def train_from_iterator(
        cls,
        text_iterator: Iterable[str],
        vocab_size: int,
        pattern: str = SPLIT_PATTERN,
        chunk_size: int = 4096,
    ) -> Tokenizer:
        """Trains a vocabulary of exactly ``vocab_size`` tokens (chat special
        tokens included) on the texts, in Rust.

        Raises:
            ValueError: ``vocab_size`` is too small, or the text has too few
                distinct pairs to reach it.
        """
        n_special = len(CHAT_SPECIAL_TOKENS)
        if vocab_size < 256 + n_special:
            raise ValueError(f"vocab_size must be at least {256 + n_special}, got {vocab_size}")
        trainer = _core.BpeTrainer(pattern)
        chunk: list = []
        for text in text_iterator:
            chunk.append(text)
            if len(chunk) >= chunk_size:
                trainer.feed(chunk)
                chunk = []
        if chunk:
            trainer.feed(chunk)
        ranks = trainer.finish(vocab_size - n_special)
        return cls(_core.CoreTokenizer.from_ranks(ranks, _chat_specials(len(ranks)), pattern))

    def save(self, directory: Union[str, os.PathLike], nanochat_files: bool = True) -> None:
        """Writes ``tokenizer.tiktoken`` (the ranks) and ``convpack_tokenizer.json``
        (pattern and special tokens) into ``directory``; with ``nanochat_files``
        also nanochat's ``tokenizer.pkl`` and ``token_bytes.pt`` (see
        :func:`convpack.interop.write_nanochat_files`: each needs its package,
        tiktoken or torch, and a missing one is skipped with a warning; an
        older copy that is not rewritten is removed)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, _RANKS), "w", encoding="ascii") as f:
            f.write(self._core.to_tiktoken())
        config = {
            "format": _FORMAT,
            "version": 1,
            "pattern": self._core.pattern,
            "special_tokens": [list(s) for s in self._core.special_tokens],
        }
        config["nanochat_files"] = write_nanochat_files(self, directory, nanochat_files)
        with open(os.path.join(directory, _CONFIG), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    # ------------------------------------------------------------ properties

    @property
    def pattern(self) -> str:
        return self._core.pattern

    @property
    def mergeable_ranks(self) -> dict:
        """``{token bytes: rank}`` (for building a ``tiktoken.Encoding``)."""
        return {b: i for i, b in enumerate(self._core.ranks())}

    @property
    def special_tokens(self) -> dict:
        """``{name: id}`` of the special tokens."""
        return dict(self._core.special_tokens)

    def get_vocab_size(self) -> int:
        return self._core.vocab_size

    def get_special_tokens(self) -> set:
        return {name for name, _ in self._core.special_tokens}

    def _encode_special(self, text: str) -> int:
        token = self._core.special_id(text)
        if token is None:
            raise KeyError(f"{text!r} is not a special token of this tokenizer")
        return token

    def get_bos_token_id(self) -> int:
        return self.encode_special(self._bos_token())

    def id_to_token(self, id: int) -> str:
        return self.decode([id])

    def token_bytes(self, id: int) -> bytes:
        return self._core.token_bytes(id)

    # -------------------------------------------------------------- encoding

    def encode(
        self,
        text: Union[str, Sequence[str]],
        prepend: Optional[TokenLike] = None,
        append: Optional[TokenLike] = None,
        num_threads: Optional[int] = None,
        allowed_special: Optional[Union[str, Iterable[str]]] = None,
    ) -> Union[list, list]:
        """Token ids of ``text`` (a str) or of each text (a list of str).

        Special tokens' text is encoded as ordinary text, as nanochat does,
        unless ``allowed_special`` is given: then tiktoken's rule applies
        (allowed specials become their ids; any other special token in the
        text raises ``ValueError``). ``allowed_special="all"`` allows all.
        ``prepend``/``append`` add a token (an id or a special token's name).
        A list is encoded on ``num_threads`` Rust threads (None: all).
        """
        pre = self._token(prepend)
        post = self._token(append)
        if isinstance(text, str):
            ids = self._encode_one(text, allowed_special)
            if pre is not None:
                ids.insert(0, pre)
            if post is not None:
                ids.append(post)
            return ids
        if isinstance(text, (list, tuple)):
            if allowed_special is None:
                rows = self._core.encode_ordinary_batch(text, _threads(num_threads))
            else:
                rows = [self._encode_one(t, allowed_special) for t in text]
            if pre is not None or post is not None:
                for row in rows:
                    if pre is not None:
                        row.insert(0, pre)
                    if post is not None:
                        row.append(post)
            return rows
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    __call__ = encode

    def encode_ordinary(self, text: str) -> list:
        """Ids of ``text`` with special tokens' text encoded as ordinary text."""
        return self._core.encode_ordinary(text)

    def _encode_one(self, text: str, allowed_special) -> list:
        if allowed_special is None:
            return self._core.encode_ordinary(text)
        if allowed_special == "all":
            allowed = [name for name, _ in self._core.special_tokens]
        else:
            allowed = list(allowed_special)
        return self._core.encode(text, allowed)

    def _token(self, token: Optional[TokenLike]) -> Optional[int]:
        if token is None or isinstance(token, int):
            return token
        return self.encode_special(token)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        return self._core.decode(_as_list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._core.decode_bytes(_as_list(ids))

    # ------------------------------------------------------------- rendering

    def render_conversation(self, conversation: Conversation, max_tokens: int = 2048) -> tuple:
        """``(ids, mask)`` lists for one conversation (see SPEC's table).

        Raises:
            ConversationError: naming the message and the rule broken.
        """
        return self._core.render_conversation(conversation, _max_tokens(max_tokens))

    def render_for_completion(self, conversation: Conversation, max_tokens: int = 2048) -> list:
        """Ids of the conversation without its final assistant message, then
        ``<|assistant_start|>``: the prompt for generating that message."""
        return self._core.render_for_completion(conversation, _max_tokens(max_tokens))

    def render_conversations(
        self,
        conversations: Iterable[Conversation],
        max_tokens: int = 2048,
        num_threads: Optional[int] = None,
    ) -> tuple:
        """Renders many conversations on Rust threads with the GIL released.

        Returns ``(ids, mask, offsets)`` numpy arrays: conversation ``i`` is
        ``ids[offsets[i]:offsets[i + 1]]`` (uint32), its mask likewise
        (uint8). The first bad conversation raises ``ConversationError``
        with its position as ``conversation_index``.
        """
        return self._core.render_conversations(
            conversations, _max_tokens(max_tokens), _threads(num_threads)
        )

    def visualize_tokenization(self, ids: Sequence[int], mask: Sequence[int], with_token_id: bool = False) -> str:
        """The tokens joined by ``|``, green where trained on (mask 1) and red
        where not, optionally followed by their ids in grey."""
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
            f"special_tokens={len(self._core.special_tokens)})"
        )

    def __getstate__(self) -> dict:
        return {
            "ranks": self._core.ranks(),
            "pattern": self._core.pattern,
            "special_tokens": self._core.special_tokens,
        }

    def __setstate__(self, state: dict) -> None:
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


def _max_tokens(max_tokens: int) -> int:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return int(max_tokens)


def _as_list(ids: Any) -> list:
    if isinstance(ids, list):
        return ids
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    if hasattr(ids, "tolist"):  # torch tensors
        return ids.tolist()
    return list(ids)


def _ranks_from_dict(mergeable_ranks: dict, what: str) -> list:
    n = len(mergeable_ranks)
    ranks: list = [None] * n
    for token, rank in mergeable_ranks.items():
        if not isinstance(rank, int) or not 0 <= rank < n or ranks[rank] is not None:
            raise VocabularyError(
                f"{what}: ranks must be the integers 0..{n - 1} without gaps or repeats, "
                f"found {rank!r} for {token!r}",
                what,
            )
        ranks[rank] = token
    return ranks


def _specials(special_tokens, n_ranks: int) -> list:
    if special_tokens is None:
        return _chat_specials(n_ranks)
    if isinstance(special_tokens, dict):
        return list(special_tokens.items())
    return [(name, n_ranks + i) for i, name in enumerate(special_tokens)]
