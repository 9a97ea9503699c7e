"""Hugging Face ``tokenizer.json`` files on convpack's encoder.

:func:`load` reads a ``tokenizer.json`` (and, beside it,
``tokenizer_config.json``, ``special_tokens_map.json`` and
``chat_template.jinja``) into an :class:`HfVocabulary`: token bytes by id,
added tokens, the split pattern as the core's regex engine must spell it,
the normalizer and the post-processor's template. ``Tokenizer.from_hf``
builds the core tokenizer from it.

Supported: ``model.type == "BPE"`` byte-level files (the ``ByteLevel``
pre-tokenizer alone, or a ``Split`` regex followed by ``ByteLevel`` with
``use_regex: false``), no normalizer or NFC, whose merges list is
merged either by rank (when the core proves at load time that the merges
list gives the rank order's ids: files with one merge per token in id
order, like Qwen's, and the GPT-4/GPT-4o conversions that list every split
of a token) or by the merges list itself, as ``tokenizers`` merges (files
that fail the proof, like the Llama 3 conversion). Anything else
is refused with a :class:`HfTokenizerError` naming the component: the
ids of ``tokenizers`` (the oracle) are never silently replaced by others.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Optional

from . import _core
from ._atomic import AtomicFiles
from ._pickle import read_regular_file
from .errors import VocabularyError

__all__ = ["HfTokenizerError", "HfVocabulary", "load", "SUPPORTED"]

#: What :func:`load` accepts, in words (error messages repeat it).
SUPPORTED = (
    "byte-level BPE tokenizer.json files (Llama 3, Qwen 2/2.5/3, GPT-2, GPT-4 and GPT-4o as HF files): "
    "model BPE without byte_fallback, pre_tokenizer ByteLevel or Sequence[Split(Regex), ByteLevel(use_regex=false)], "
    "normalizer none or NFC"
)

#: Largest tokenizer.json read (Qwen's is 11 MB; o200k's about 30 MB).
_MAX_JSON_BYTES = 512 << 20
_MAX_SIDE_FILE_BYTES = 16 << 20
#: Files of a HF directory that save() keeps beside convpack's own.
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
#: Special-token roles read from tokenizer_config.json / special_tokens_map.json.
ROLES = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token")

#: GPT-2's ByteLevel pre-tokenizer regex (``use_regex: true``).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class HfTokenizerError(VocabularyError):
    """A ``tokenizer.json`` that convpack cannot encode exactly as
    ``tokenizers`` does; the message names the component and what is
    supported."""


#: GPT-2's byte -> printable character map that ByteLevel vocabularies spell
#: their tokens with (the core's table, which also reads them).
BYTE_TO_CHAR: dict = dict(enumerate(_core.BYTE_LEVEL_ALPHABET))


def bytes_to_token(data: bytes) -> str:
    """A token's bytes as a ByteLevel vocabulary spells them."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


@dataclass
class AddedToken:
    """One entry of ``added_tokens``."""

    content: str
    id: int
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False


@dataclass
class HfVocabulary:
    """What a ``tokenizer.json`` (and its directory) says, ready for the core."""

    path: str
    ranks: list
    merges: list
    added: list
    pattern: str
    nfc: bool
    #: ids before and after the text for ``add_special_tokens=True``; None
    #: when the post-processor is not one we reproduce (then the option raises).
    template: Optional[tuple]
    template_problem: str = ""
    ignore_merges: bool = False
    special_token_roles: dict = field(default_factory=dict)
    chat_template: Optional[str] = None
    family: str = ""

    @property
    def specials(self) -> list:
        return [(t.content, t.id) for t in self.added]

    @property
    def plain_added(self) -> bool:
        """True when added tokens need no flag handling (the Rust path finds them)."""
        return all(
            not (t.lstrip or t.rstrip or t.single_word or (t.normalized and self.nfc)) for t in self.added
        )


    @functools.cached_property
    def rule_tokens(self) -> list:
        """The added tokens with ``lstrip``/``rstrip``/``single_word`` rules
        (asked on every templated render: worked out once)."""
        return [t for t in self.added if t.lstrip or t.rstrip or t.single_word]


def _fail(path: str, component: str, what: str) -> HfTokenizerError:
    return HfTokenizerError(
        f"{path}: {component}: {what} is not supported; supported are {SUPPORTED}",
        path,
        0,
        f"{component}: {what}",
    )


def _resolve(path: str) -> tuple:
    path = os.fspath(path)
    if os.path.isdir(path):
        directory = path
        path = os.path.join(path, "tokenizer.json")
        if not os.path.lexists(path):
            raise FileNotFoundError(f"no tokenizer.json in {directory!r}")
    else:
        directory = os.path.dirname(path) or "."
    return path, directory


def _read_json(path: str, limit: int, what: str) -> Any:
    data = read_regular_file(path, limit, what)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", 0)
        raise VocabularyError(f"{path}: not valid JSON: {e}", path, line, str(e)) from None


def _token_content(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_side_files(directory: str, vocab: HfVocabulary) -> None:
    roles: dict = {}
    template = None
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins
        p = os.path.join(directory, name)
        if not os.path.isfile(p):
            continue
        config = _read_json(p, _MAX_SIDE_FILE_BYTES, name)
        if not isinstance(config, dict):
            raise VocabularyError(f"{p}: expected a JSON object", p)
        for role in ROLES:
            if role in config:
                content = _token_content(config[role])
                if content is None:
                    roles.pop(role, None)
                else:
                    roles[role] = content
        if name == "tokenizer_config.json" and "chat_template" in config:
            t = config["chat_template"]
            if isinstance(t, list):
                named = {e.get("name"): e.get("template") for e in t if isinstance(e, dict)}
                t = named.get("default")
            template = t if isinstance(t, str) else None
    jinja = os.path.join(directory, "chat_template.jinja")
    if template is None and os.path.isfile(jinja):
        template = read_regular_file(jinja, _MAX_SIDE_FILE_BYTES, "chat template").decode("utf-8")
    vocab.special_token_roles = roles
    vocab.chat_template = template


def _translate_onig(pattern: str) -> str:
    """``pattern`` as Oniguruma reads it, spelled for the core's engine.

    Oniguruma (``tokenizers``' engine) reads ``X{n,m}+`` as a greedy
    repetition of ``X{n,m}``, not as a possessive ``X{n,m}``; ``?+``,
    ``*+`` and ``++`` are possessive in both.
    """
    out: list = []
    last_atom = None  # index in ``out`` where the last atom starts
    group_starts: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            j = i + 2
            if i + 1 < n and pattern[i + 1] in "pPxu" and j < n and pattern[j] == "{":
                j = pattern.index("}", j) + 1
            last_atom = len(out)
            out.append(pattern[i:j])
            i = j
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            depth = 1
            while j < n and depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                if pattern[j] == "[":
                    depth += 1
                elif pattern[j] == "]":
                    depth -= 1
                j += 1
            last_atom = len(out)
            out.append(pattern[i:j])
            i = j
        elif c == "(":
            group_starts.append(len(out))
            out.append(c)
            last_atom = None
            i += 1
        elif c == ")":
            start = group_starts.pop() if group_starts else len(out)
            out.append(c)
            last_atom = start
            i += 1
        elif c == "{" and last_atom is not None:
            j = pattern.find("}", i)
            body = pattern[i + 1 : j] if j > 0 else ""
            if j > 0 and body and all(ch.isdigit() or ch == "," for ch in body):
                quant = pattern[i : j + 1]
                if j + 1 < n and pattern[j + 1] == "+":
                    atom = "".join(out[last_atom:])
                    del out[last_atom:]
                    out.append(f"(?:{atom}{quant})")
                    i = j + 1  # the '+' is read next, as a quantifier of the group
                else:
                    out.append(quant)
                    i = j + 1
                continue
            out.append(c)
            i += 1
        else:
            if c in "|":
                last_atom = None
            elif c not in "?*+":
                last_atom = len(out)
            out.append(c)
            i += 1
    return "".join(out)


def _pre_tokenizer_pattern(path: str, pre: Any) -> str:
    if not isinstance(pre, dict):
        raise _fail(path, "pre_tokenizer", repr(pre))
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if not isinstance(steps, list):
        raise _fail(path, "pre_tokenizer", "a Sequence without a list")
    kinds = [s.get("type") if isinstance(s, dict) else None for s in steps]
    if kinds == ["ByteLevel"]:
        bl = steps[0]
        if bl.get("add_prefix_space"):
            raise _fail(path, "pre_tokenizer ByteLevel", "add_prefix_space=true")
        if not bl.get("use_regex", True):
            raise _fail(path, "pre_tokenizer ByteLevel", "use_regex=false with no Split before it")
        return GPT2_PATTERN
    if kinds == ["Split", "ByteLevel"]:
        split, bl = steps
        if bl.get("add_prefix_space"):
            raise _fail(path, "pre_tokenizer ByteLevel", "add_prefix_space=true")
        if bl.get("use_regex", True):
            raise _fail(path, "pre_tokenizer", "Split followed by ByteLevel with use_regex=true")
        pattern = split.get("pattern")
        if not (isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str)):
            raise _fail(path, "pre_tokenizer Split", f"pattern {pattern!r} (only a Regex pattern)")
        if split.get("behavior") != "Isolated" or split.get("invert"):
            raise _fail(
                path,
                "pre_tokenizer Split",
                f"behavior {split.get('behavior')!r} with invert={split.get('invert')!r} (only Isolated, invert=false)",
            )
        return _split_pattern(path, pattern["Regex"])
    raise _fail(path, "pre_tokenizer", " then ".join(str(k) for k in kinds) or "empty")


def _split_pattern(path: str, regex: str) -> str:
    pattern = _translate_onig(regex)
    # A pattern the hand-written scanner serves covers every character (so
    # Split has no unmatched text). Any other pattern gets alternatives that
    # make the text between matches one piece, as Split(Isolated) does.
    probe = [bytes([b]) for b in range(256)]
    try:
        path_kind = _core.CoreTokenizer.from_ranks(probe, [], pattern).pretokenizer
    except ValueError as e:
        raise _fail(path, "pre_tokenizer Split", f"pattern {regex!r} ({e})") from None
    if path_kind.startswith("fast:"):
        return pattern
    return f"(?:{pattern})|(?s:.+?)(?=(?:{pattern}))|(?s:.+)"


def _normalizer(path: str, norm: Any) -> bool:
    if norm is None:
        return False
    if isinstance(norm, dict):
        if norm.get("type") == "NFC":
            return True
        if norm.get("type") == "Sequence" and isinstance(norm.get("normalizers"), list):
            inner = norm["normalizers"]
            if not inner:
                return False
            if len(inner) == 1:
                return _normalizer(path, inner[0])
    kind = norm.get("type") if isinstance(norm, dict) else repr(norm)
    raise _fail(path, "normalizer", str(kind))


def _post_template(post: Any) -> tuple:
    """``(prefix ids, suffix ids)`` for one sequence, or ``(None, why)``."""
    if post is None:
        return ([], []), ""
    kind = post.get("type") if isinstance(post, dict) else None
    if kind == "ByteLevel":
        return ([], []), ""  # offsets only
    if kind == "Sequence":
        prefix: list = []
        suffix: list = []
        for p in post.get("processors", []):
            t, why = _post_template(p)
            if t is None:
                return None, why
            prefix = prefix + t[0]
            suffix = suffix + t[1]
        return (prefix, suffix), ""
    if kind == "TemplateProcessing":
        specials = post.get("special_tokens", {})
        prefix, suffix = [], []
        seen_a = False
        for item in post.get("single", []):
            if "Sequence" in item:
                if item["Sequence"].get("id") != "A" or seen_a:
                    return None, "TemplateProcessing with a single template other than one sequence A"
                seen_a = True
            elif "SpecialToken" in item:
                name = item["SpecialToken"].get("id")
                entry = specials.get(name)
                if not isinstance(entry, dict) or not isinstance(entry.get("ids"), list):
                    return None, f"TemplateProcessing names special token {name!r} without ids"
                (suffix if seen_a else prefix).extend(int(i) for i in entry["ids"])
            else:
                return None, f"TemplateProcessing item {item!r}"
        return (prefix, suffix), ""
    return None, f"post_processor {kind!r}"


def load(path: Any) -> HfVocabulary:
    """Reads a ``tokenizer.json`` (a file, or a directory holding one).

    Returns:
        The vocabulary, with the roles and chat template of its directory.

    Raises:
        FileNotFoundError: there is no tokenizer.json.
        HfTokenizerError: a component convpack does not reproduce exactly
            (the message names it and what is supported).
        VocabularyError: the file is not valid JSON or is inconsistent.
    """
    path, directory = _resolve(path)
    doc = _read_json(path, _MAX_JSON_BYTES, "tokenizer.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise VocabularyError(f"{path}: expected a JSON object with a 'model'", path)
    model = doc["model"]
    if model.get("type", "BPE") != "BPE":
        raise _fail(path, "model", f"type {model.get('type')!r}")
    if model.get("byte_fallback"):
        raise _fail(path, "model BPE", "byte_fallback=true (SentencePiece-style BPE)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise _fail(path, "model BPE", f"{key}={model[key]!r}")
    decoder = doc.get("decoder")
    if decoder is not None and not (isinstance(decoder, dict) and decoder.get("type") == "ByteLevel"):
        kind = decoder.get("type") if isinstance(decoder, dict) else repr(decoder)
        raise _fail(path, "decoder", str(kind))
    nfc = _normalizer(path, doc.get("normalizer"))
    pattern = _pre_tokenizer_pattern(path, doc.get("pre_tokenizer"))

    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise VocabularyError(f"{path}: field 'model.vocab' must be an object", path)
    ranks, problem = _core.hf_vocab_bytes(vocab)
    if problem is not None:
        rule, what = problem
        if rule == "alphabet":
            raise _fail(path, "model.vocab", f"token {what!r}, not spelled in ByteLevel's alphabet")
        if rule == "size":
            raise VocabularyError(f"{path}: 'model.vocab' ids reach {what} for {len(vocab)} tokens", path)
        raise VocabularyError(f"{path}: model.vocab[{what!r}] must be a non-negative integer", path)

    added = []
    for entry in doc.get("added_tokens") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not isinstance(entry.get("id"), int):
            raise VocabularyError(f"{path}: added_tokens entry {entry!r} needs 'content' and 'id'", path)
        added.append(
            AddedToken(
                entry["content"],
                entry["id"],
                bool(entry.get("special", False)),
                bool(entry.get("lstrip", False)),
                bool(entry.get("rstrip", False)),
                bool(entry.get("single_word", False)),
                bool(entry.get("normalized", not entry.get("special", False))),
            )
        )
    # An added token that is also a model token (GPT-2's <|endoftext|>) is
    # always split out before the model sees text: the id is the added one.
    # Ids as tokenizers assigns them when it reads the file (the file's ids
    # are what it expects, and it only warns when they differ): a token the
    # model has keeps the model's id, and is always split out before the
    # model sees text; any other gets the next id after the model's
    # len(vocab), in file order.
    next_id = len(vocab)
    seen: dict = {}
    blanked: list = []
    for t in added:
        if t.content in seen:
            t.id = seen[t.content]
            continue
        model_id = vocab.get(t.content)
        if model_id is not None:
            t.id = model_id
            ranks[model_id] = b""
            blanked.append(model_id)
        else:
            t.id = next_id
            next_id += 1
        seen[t.content] = t.id
    added = list({t.content: t for t in added}.values())

    listed = model.get("merges") or []
    if not isinstance(listed, list):
        raise VocabularyError(f"{path}: field 'model.merges' must be a list", path)
    merges, problem = _core.hf_merge_ids(vocab, listed, blanked)
    if problem is not None:
        rule, k = problem
        if rule == "added":
            raise _fail(path, "model.merges", f"merge {k} {listed[k]!r} of an added token")
        raise VocabularyError(f"{path}: model.merges[{k}] {listed[k]!r} is not a pair of vocabulary tokens", path)

    template, problem = _post_template(doc.get("post_processor"))
    family = "ByteLevel BPE" + (" + NFC" if nfc else "")
    out = HfVocabulary(path, ranks, merges, added, pattern, nfc, template, problem, family=family)
    out.ignore_merges = bool(model.get("ignore_merges", False))
    _read_side_files(directory, out)
    return out


def merges_follow_ranks(vocab: HfVocabulary) -> bool:
    """True when the file's merges give the same ids as merging by rank
    (the core's fastest encoder); otherwise pieces merge by the list."""
    try:
        _core.hf_check_merges(vocab.ranks, vocab.merges)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- encoding

_WS = frozenset(" \t\n\v\f\r\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


class AddedSplitter:
    """Splits text on added tokens the way ``tokenizers`` does: leftmost,
    longest first; ``single_word``, ``lstrip`` and ``rstrip`` honoured;
    tokens with ``normalized`` matched after the normalizer."""

    def __init__(self, added: list, nfc: bool) -> None:
        import re

        self.nfc = nfc
        raw = [t for t in added if not (t.normalized and nfc)]
        norm = [t for t in added if t.normalized and nfc]
        self.passes = []
        for group in (raw, norm):
            by_content = {t.content: t for t in group}
            if by_content:
                alts = sorted(by_content, key=len, reverse=True)
                self.passes.append((re.compile("|".join(re.escape(a) for a in alts)), by_content))
            else:
                self.passes.append((None, {}))

    def _split(self, text: str, which: int) -> list:
        regex, by_content = self.passes[which]
        if regex is None:
            return [(text, None)]
        out = []
        done = 0
        for m in regex.finditer(text):
            tok = by_content[m.group()]
            start, stop = m.start(), m.end()
            if tok.single_word:
                if (start > 0 and _is_word(text[start - 1])) or (stop < len(text) and _is_word(text[stop])):
                    continue
            if tok.lstrip:
                while start > done and text[start - 1] in _WS:
                    start -= 1
            if tok.rstrip:
                while stop < len(text) and text[stop] in _WS:
                    stop += 1
            if done < start:
                out.append((text[done:start], None))
            out.append(("", tok.id))
            done = stop
        if done < len(text) or not out:
            out.append((text[done:], None))
        return out

    def segments(self, text: str) -> list:
        """``[(text, None) | ("", added id)]`` in order; texts normalized."""
        out = []
        for seg, tid in self._split(text, 0):
            if tid is not None:
                out.append((seg, tid))
                continue
            if self.nfc:
                seg = unicodedata.normalize("NFC", seg)
            out.extend(self._split(seg, 1))
        return out


def save_files(vocab: HfVocabulary, directory: str, files: AtomicFiles) -> None:
    """Stages copies of the HF files the vocabulary came from in ``files``
    (an :class:`~convpack._atomic.AtomicFiles` on ``directory``), which the
    caller commits with its own files."""
    source = os.path.dirname(vocab.path) or "."
    if os.path.abspath(source) == os.path.abspath(directory):
        return  # saved over its own directory: the files are already there
    files.write("tokenizer.json", _copier(vocab.path))
    for name in HF_FILES[1:]:
        p = os.path.join(source, name)
        if os.path.isfile(p):
            files.write(name, _copier(p))


def _copier(path: str):
    def copy(f) -> None:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, f)

    return copy
