"""Benchmark inputs made from what is on the machine: no downloads.

Every generator is deterministic for a given seed, so runs on different
machines time the same text.

- English prose: sentences drawn from a short list of common words mixed
  with the ``english-words`` package's list, both with Zipf weights
  (frequent words dominate and rare ones form a long tail, as in real text).
- Source code: the Python standard library's own ``.py`` files.
- Multilingual: real translations, the message catalogs (``.mo``) of the
  system's locale directory and of installed packages (a Debian machine has
  a few thousand in about 190 languages), taken a catalog per language in
  turn so that every script is represented. Where a machine has none, words
  of random letters from ten scripts (CJK, kana, Hangul, Cyrillic, Greek,
  Arabic, Hebrew, Devanagari, Thai, accented Latin) stand in, and
  ``multilingual_source()`` says which one was used.
- Chat: the message texts of the SmolTalk-like conversations below.
- Conversations: short ones sized like SpellingBee and MMLU, long ones
  shaped like SmolTalk (about 4.7 messages of about 845 characters).
"""

from __future__ import annotations

import functools
import gettext
import glob
import os
import random
import sys
from collections.abc import Iterator

__all__ = [
    "english_docs",
    "code_docs",
    "multilingual_docs",
    "chat_docs",
    "multilingual_source",
    "script_docs",
    "translation_catalogs",
    "corpus",
    "CORPORA",
    "mmlu_like_conversations",
    "smoltalk_like_conversations",
    "spellingbee_conversations",
]

_COMMON = (
    "the of and to a in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can what about up out them some time into only other new than then do "
    "could these two may first any like now my such make over our even most after also made "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very world still own see men work long get "
    "here between both life being under never day same another know while last might us great "
    "old year off come since against go came right used take three"
).split()
# Zipf weights 1 / (rank + 2): "the" is about 7% of the common words.
_COMMON_CUM = []
for _rank in range(len(_COMMON)):
    _COMMON_CUM.append((_COMMON_CUM[-1] if _COMMON_CUM else 0.0) + 1.0 / (_rank + 2))


@functools.lru_cache(maxsize=1)
def _rare_words() -> tuple:
    """The word list in a fixed random order, with cumulative Zipf weights
    (the word at rank r drawn with weight 1 / (r + 10)): a long tail in
    which some words recur, as in real text, rather than every word being
    equally rare."""
    try:
        from english_words import get_english_words_set
    except ImportError:  # a dependency, but keep the benchmarks usable without it
        words = sorted(set(_COMMON))
    else:
        # Long entries are mostly phrases with their spaces removed.
        words = sorted(
            w for w in get_english_words_set(["gcide"], alpha=True, lower=True) if len(w) <= 10
        )
    random.Random("rare-words").shuffle(words)
    cum, total = [], 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 10)
        cum.append(total)
    return tuple(words), cum


def _sentence(rng: random.Random, rare: tuple, n_words: int) -> str:
    words = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.62:
            words.append(rng.choices(_COMMON, cum_weights=_COMMON_CUM)[0])
        elif r < 0.64:
            words.append(str(rng.randint(0, 2025)))
        else:
            words.append(rng.choices(rare[0], cum_weights=rare[1])[0])
    if rng.random() < 0.15:
        words[rng.randrange(len(words))] += "'s"
    for _ in range(rng.randint(0, 2)):
        words[rng.randrange(len(words))] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def prose(rng: random.Random, n_chars: int) -> str:
    """English-like prose of about ``n_chars`` characters (at least one word)."""
    rare = _rare_words()
    parts: list[str] = []
    size = 0
    while size < n_chars:
        s = _sentence(rng, rare, rng.randint(4, 22))
        parts.append(s)
        size += len(s) + 1
        if rng.random() < 0.12:
            parts.append("\n\n")
    text = " ".join(parts).replace(" \n\n ", "\n\n")
    return text[: max(n_chars, 1)].rstrip() or "Hello."


def english_docs(total_chars: int, seed: int = 0, doc_chars: int = 2000) -> list[str]:
    rng = random.Random(f"english/{seed}")
    docs, size = [], 0
    while size < total_chars:
        doc = prose(rng, rng.randint(doc_chars // 2, doc_chars * 3 // 2))
        docs.append(doc)
        size += len(doc)
    return docs


def code_docs(total_chars: int, seed: int = 0, doc_chars: int = 4000) -> list[str]:
    """Chunks of the standard library's sources, in a fixed file order."""
    root = os.path.dirname(os.__file__)
    files = sorted(name for name in os.listdir(root) if name.endswith(".py"))
    random.Random(f"code/{seed}").shuffle(files)
    docs, size = [], 0
    for name in files:
        try:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                src = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        for i in range(0, len(src), doc_chars):
            docs.append(src[i : i + doc_chars])
            size += len(docs[-1])
            if size >= total_chars:
                return docs
    return docs


_SCRIPTS = (
    ("CJK", [(0x4E00, 0x9FFF)], 1, 4, ""),
    ("Hiragana/Katakana", [(0x3041, 0x3096), (0x30A1, 0x30FA)], 2, 6, ""),
    ("Hangul", [(0xAC00, 0xD7A3)], 1, 4, " "),
    ("Cyrillic", [(0x0430, 0x044F)], 2, 10, " "),
    ("Greek", [(0x03B1, 0x03C9)], 2, 10, " "),
    ("Arabic", [(0x0627, 0x064A)], 2, 8, " "),
    ("Hebrew", [(0x05D0, 0x05EA)], 2, 7, " "),
    ("Devanagari", [(0x0915, 0x0939), (0x093E, 0x094C)], 2, 7, " "),
    ("Thai", [(0x0E01, 0x0E2E), (0x0E30, 0x0E39)], 3, 9, ""),
    ("Latin", [(0x61, 0x7A), (0x61, 0x7A), (0xE0, 0xFF)], 2, 10, " "),
)
_PUNCT = {"CJK": "，。！？", "Hiragana/Katakana": "、。", "Arabic": "،.؟"}


def _script_text(rng: random.Random, n_chars: int) -> str:
    name, ranges, lo, hi, sep = rng.choice(_SCRIPTS)
    out: list[str] = []
    size = 0
    while size < n_chars:
        a, b = rng.choice(ranges)
        word = "".join(chr(rng.randint(a, b)) for _ in range(rng.randint(lo, hi)))
        if rng.random() < 0.1:
            word += rng.choice(_PUNCT.get(name, ",.!?"))
        out.append(word)
        size += len(word) + len(sep)
        if rng.random() < 0.03:
            out.append(str(rng.randint(1, 9999)))
    return sep.join(out)


def script_docs(total_chars: int, seed: int = 0, doc_chars: int = 1500) -> list[str]:
    """Documents of random-letter words that switch script every few hundred characters."""
    rng = random.Random(f"multilingual/{seed}")
    docs, size = [], 0
    while size < total_chars:
        target = rng.randint(doc_chars // 2, doc_chars * 3 // 2)
        parts, n = [], 0
        while n < target:
            part = _script_text(rng, rng.randint(40, 400))
            parts.append(part)
            n += len(part) + 1
        doc = rng.choice(("\n", " ", "\n\n")).join(parts)
        docs.append(doc)
        size += len(doc)
    return docs


def _catalog_dirs() -> list[str]:
    dirs = ["/usr/share/locale", "/usr/local/share/locale"]
    for prefix in {sys.prefix, sys.base_prefix}:
        dirs.append(os.path.join(prefix, "share", "locale"))
    return dirs


@functools.lru_cache(maxsize=1)
def translation_catalogs() -> tuple[tuple[str, str], ...]:
    """``(language, path)`` of every readable ``.mo`` catalog, in a fixed order.

    The order takes one catalog of each language in turn (languages sorted,
    each language's catalogs sorted by path), so a prefix of the list covers
    as many languages as it can.
    """
    by_lang: dict[str, list[str]] = {}
    seen = set()
    for base in _catalog_dirs():
        for path in sorted(glob.glob(os.path.join(base, "*", "LC_MESSAGES", "*.mo"))):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            lang = os.path.basename(os.path.dirname(os.path.dirname(path)))
            by_lang.setdefault(lang, []).append(path)
    order: list[tuple[str, str]] = []
    depth = 0
    while True:
        row = [
            (lang, paths[depth]) for lang, paths in sorted(by_lang.items()) if depth < len(paths)
        ]
        if not row:
            return tuple(order)
        order.extend(row)
        depth += 1


def _catalog_text(path: str) -> str:
    """The translated strings of one catalog, one per line ('' when unreadable)."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return ""
    # Keys are msgids (str) or (msgid, n) for plural forms; "" is the header.
    return "\n".join(v for k, v in catalog.items() if k and isinstance(v, str) and v.strip())


def multilingual_source() -> str:
    """Which text ``multilingual_docs`` is made of on this machine."""
    n = len(translation_catalogs())
    if n == 0:
        return "random-letter words in ten scripts (no .mo catalogs on this machine)"
    langs = len({lang for lang, _ in translation_catalogs()})
    return f"translation catalogs: {n} .mo files in {langs} languages"


def multilingual_docs(total_chars: int, seed: int = 0, doc_chars: int = 1500) -> list[str]:
    """Real translations: documents of about ``doc_chars`` cut from the catalogs.

    ``seed`` rotates where in the catalog order the documents start, so
    different seeds give different (still many-language) text.
    """
    catalogs = translation_catalogs()
    if not catalogs:
        return script_docs(total_chars, seed=seed, doc_chars=doc_chars)
    docs: list[str] = []
    size = 0
    start = (seed * 7919) % len(catalogs)
    for i in range(len(catalogs)):
        text = _catalog_text(catalogs[(start + i) % len(catalogs)][1])
        # At most a few documents per catalog, so that one large catalog
        # does not stand for its whole language.
        for at in range(0, min(len(text), 4 * doc_chars), doc_chars):
            doc = text[at : at + doc_chars]
            docs.append(doc)
            size += len(doc)
            if size >= total_chars:
                return docs
    return docs


def chat_docs(total_chars: int, seed: int = 0) -> list[str]:
    """The message texts of SmolTalk-like conversations, in order, adding up
    to about ``total_chars`` (what a chat loader encodes)."""
    docs: list[str] = []
    size = 0
    batch = 0
    while size < total_chars:
        convs = smoltalk_like_conversations(200, seed=seed * 1000 + batch)
        batch += 1
        for conversation in convs:
            for text in iter_texts(conversation):
                docs.append(text)
                size += len(text)
            if size >= total_chars:
                return docs
    return docs


CORPORA = {
    "english": english_docs,
    "code": code_docs,
    "multilingual": multilingual_docs,
    "chat": chat_docs,
}


def corpus(name: str, total_chars: int, seed: int = 0) -> list[str]:
    """Documents of corpus ``name`` (one of ``CORPORA``) adding up to about ``total_chars``."""
    return CORPORA[name](total_chars, seed=seed)


# ----------------------------------------------------------- conversations


def spellingbee_conversations(n: int) -> list[dict]:
    """SpellingBee's own conversations (short, with python parts)."""
    from tasks.spellingbee import SpellingBee

    task = SpellingBee(size=n, split="train")
    return [task[i] for i in range(n)]


def mmlu_like_conversations(n: int, seed: int = 0) -> list[dict]:
    """Multiple-choice conversations shaped like MMLU's (question, four
    choices rendered with ``render_mc``, a one-letter answer)."""
    from tasks.common import render_mc

    rng = random.Random(f"mmlu/{seed}")
    letters = ("A", "B", "C", "D")
    out = []
    for _ in range(n):
        question = prose(rng, rng.randint(60, 400))
        choices = [prose(rng, rng.randint(5, 60)) for _ in letters]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": render_mc(question, letters, choices)},
                    {"role": "assistant", "content": rng.choice(letters)},
                ]
            }
        )
    return out


def _message_chars(rng: random.Random) -> int:
    # The seed's SmolTalk statistics: 4% of messages under 50 characters,
    # 31% of 50-200, 65% over 200, 845 characters on average.
    r = rng.random()
    if r < 0.04:
        return rng.randint(10, 49)
    if r < 0.35:
        return rng.randint(50, 200)
    return 201 + int(rng.expovariate(1 / 1040))


def smoltalk_like_conversations(n: int, seed: int = 0) -> list[dict]:
    """Conversations shaped like SmolTalk's: 15.7% open with a system
    message, 1-4 user/assistant exchanges (4.7 messages on average)."""
    rng = random.Random(f"smoltalk/{seed}")
    out = []
    for _ in range(n):
        messages = []
        if rng.random() < 0.157:
            messages.append({"role": "system", "content": prose(rng, _message_chars(rng))})
        turns = rng.choices((1, 2, 3, 4), weights=(30, 30, 25, 15))[0]
        for _ in range(turns):
            messages.append({"role": "user", "content": prose(rng, _message_chars(rng))})
            messages.append({"role": "assistant", "content": prose(rng, _message_chars(rng))})
        out.append({"messages": messages})
    return out


def iter_texts(conversation: dict) -> Iterator[str]:
    """Every text of a conversation: message contents and part texts."""
    for message in conversation["messages"]:
        content = message["content"]
        if isinstance(content, str):
            yield content
        else:
            for part in content:
                yield part["text"]
