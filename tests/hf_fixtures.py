"""Hugging Face ``tokenizer.json`` files built from real ranks, offline.

``write_tokenizer_json(family, directory)`` writes ``tokenizer.json`` (and
``tokenizer_config.json``, ``special_tokens_map.json``) the way the
published files of each family are laid out: its split pattern, its added
tokens, normalizer, post-processor and ``ignore_merges``. The ranks come
from ``quicktok`` (Llama 3, Qwen 3, o200k, cl100k); the merges list is
derived here from the ranks by a plain rank-BPE written in this file (the
way ``transformers`` converts tiktoken vocabularies), never by convpack.

Families: ``cl100k``, ``o200k``, ``llama3``, ``qwen3``; variants:
``cl100k-possessive`` (cl100k with tiktoken's possessive spelling of the
pattern, which Oniguruma reads differently), ``cl100k-one`` (one merge per
token, the layout of files trained by ``tokenizers``), ``gpt2-style`` (cl100k ranks
with the ByteLevel pre-tokenizer's own regex), ``llama3-strip`` (Llama 3
with an added token that has lstrip/rstrip and one with single_word).
"""

from __future__ import annotations

import functools
import json
import os

#: The families' published Split patterns (as their tokenizer.json spell them).
GPT4_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_HF_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
#: cl100k as tiktoken spells it: possessive quantifiers and `\p{N}{1,3}+`.
CL100K_POSSESSIVE_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)

_QUICKTOK = {"cl100k": "cl100k_base", "o200k": "o200k_base", "llama3": "llama3", "qwen3": "qwen3"}
FAMILIES = ("cl100k", "o200k", "llama3", "qwen3")
VARIANTS = ("cl100k-possessive", "cl100k-one", "gpt2-style", "llama3-strip")

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bytes_to_unicode() -> dict:
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


_B2U = _bytes_to_unicode()


def spell(data: bytes) -> str:
    """Token bytes as ByteLevel vocabularies spell them."""
    return "".join(_B2U[b] for b in data)


@functools.cache
def ranks_and_specials(family: str) -> tuple:
    """``({token bytes: rank}, [(special text, id)])`` of a family, from quicktok."""
    import quicktok

    enc = quicktok.get_encoding(_QUICKTOK[family])
    specials = sorted(((s, enc.encode_single_token(s)) for s in enc.special_tokens_set), key=lambda x: x[1])
    special_ids = {i for _, i in specials}
    ranks = {}
    for i in range(enc.n_vocab):
        if i in special_ids:
            continue
        try:
            data = enc.decode_single_token_bytes(i)
        except Exception:  # a hole in the ranks
            continue
        if data and data not in ranks and data.decode("latin-1") not in dict(specials):
            ranks[data] = i
    return ranks, specials


@functools.cache
def merges_from_ranks(family: str) -> list:
    """The merges list of a family: for each token of two or more bytes, the
    last pair that merging its bytes by rank (only lower ranks) leaves."""
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
        assert len(parts) == 2, (family, token, parts)
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
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": trim_offsets, "use_regex": False},
        ],
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


def tokenizer_document(family: str, merges_as: str = "list") -> tuple:
    """``(tokenizer.json as a dict, tokenizer_config.json as a dict)``."""
    base = family.split("-")[0] if family != "gpt2-style" else "cl100k"
    assert base in _QUICKTOK, family
    ranks, specials = ranks_and_specials(base)
    vocab = {spell(t): r for t, r in ranks.items()}
    # Qwen's published merges are one per token (trained by `tokenizers`);
    # the tiktoken conversions list every split.
    listed = merges_from_ranks(base) if base == "qwen3" or family == "cl100k-one" else merges_all_splits(base)
    merges = [[spell(a), spell(b)] for a, b in listed]
    if merges_as == "string":
        merges = [f"{a} {b}" for a, b in merges]
    added = [_added(s, i) for s, i in specials]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
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
        doc["post_processor"] = {
            "type": "Sequence",
            "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {
                    "type": "TemplateProcessing",
                    "single": [
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                    ],
                    "pair": [
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}},
                    ],
                    "special_tokens": {
                        "<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}
                    },
                },
            ],
        }
        config.update(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA3_CHAT_TEMPLATE)
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
        doc["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        doc["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        for entry in added:
            # Qwen's tool and thinking tags are added tokens that are not special.
            if not entry["content"].startswith("<|"):
                entry["special"] = False
        config.update(
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            bos_token=None,
            chat_template=[{"name": "default", "template": QWEN3_CHAT_TEMPLATE}, {"name": "tool_use", "template": "x"}],
        )
    return doc, config


def write_tokenizer_json(family: str, directory, merges_as: str = "list") -> str:
    """Writes ``family``'s ``tokenizer.json`` and ``tokenizer_config.json``
    into ``directory`` (created if needed); returns the tokenizer.json path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    doc, config = tokenizer_document(family, merges_as)
    path = os.path.join(directory, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)
    return path
