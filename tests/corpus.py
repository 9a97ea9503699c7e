"""Varied test strings for tokenizer parity (deterministic, no network)."""

from __future__ import annotations

import os
import random

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, isn't it? We'll see; they're sure you'd agree.",
    "Dr. Smith's 3rd-floor office (room #42) opens at 9:30 a.m. -- don't be late!",
    "In 1969, 600 million people watched; by 2023 the number had grown to 1,234,567,890.",
    "\"Quoted,\" she said... 'single quotes', em\u2014dash, en\u2013dash, ellipsis\u2026",
    "HELLO WORLD'S LOUDEST 'LL 'VE 'RE 'S 'T 'D 'M",
]
CODE = [
    "def f(x):\n    return x ** 2 + 1\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\r\n",
    "    if __name__ == '__main__':\n        main()\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{v:?}\"); }",
    "<div class=\"x\">&nbsp;</div>\n<!-- comment -->",
    "x = [1,2,3];y={'a':1,\"b\":[2.5e-3,-7]}",
]
MULTILINGUAL = [
    "日本語のテキストを正しく分割できるか確認します。",
    "中文文本，包括标点符号：你好，世界！",
    "한국어 문장도 포함합니다.",
    "مرحبا بالعالم، هذا نص عربي.",
    "שלום עולם, זה טקסט בעברית.",
    "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "Привет, мир! Ёлки-палки.",
    "Ελληνικά γράμματα: αβγ ΔΕΖ.",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Tiếng Việt có dấu: ă â đ ê ô ơ ư.",
]
EMOJI = [
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
    "\U0001F44D\U0001F3FD \U0001F44B\U0001F3FF \U0001F9D1\U0001F3FB\u200D\U0001F4BB",
    "\U0001F3F3\uFE0F\u200D\U0001F308 \U0001F1EF\U0001F1F5",
    "\u2764\uFE0F\U0001F525\U0001F600",
]
MARKS = [
    "e\u0301 a\u0308 n\u0303 \u1EC7 Z\u0335\u0321\u0322a\u0336\u0317l\u0337g\u0334o\u0338",
    "\u0915\u094D\u0937 \u0E01\u0E34 \u05E9\u05C1\u05B8",
]
SPACES = ["\u00A0", "\u3000", "\u2009", "\u200B", "\t", "\u2028", "\u0085", "\r\n", "\n", " "]


def _fragment(rng: random.Random) -> str:
    pool = rng.choice([PROSE, CODE, MULTILINGUAL, EMOJI, MARKS])
    return rng.choice(pool)


def _mixed(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 6)):
        parts.append(_fragment(rng))
        parts.append(rng.choice(SPACES) * rng.randint(1, 4))
    text = "".join(parts)
    if rng.random() < 0.3:
        # cut at a random character to create odd edges
        text = text[rng.randint(0, len(text)) :]
    return text


def _digits(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789 ,.\u0663\u0664\u00B2\u2167") for _ in range(rng.randint(1, 40)))


def long_runs() -> list:
    """Runs of at least 10 KB of one character class."""
    return [
        " " * 10_240,
        "\n" * 10_240,
        "a" * 10_240,
        "7" * 10_240,
        "\r\n" * 5_120,
        "\u3000" * 4_000,
        " \n" * 5_120,
        "ab " * 4_000,
        ("x" * 10_240) + (" " * 10_240) + "y",
    ]


def source_files(limit: int = 400) -> list:
    """Real source text: chunks of the installed Python standard library."""
    import json

    root = os.path.dirname(json.__file__)
    texts = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                src = f.read()
            for i in range(0, min(len(src), 8000), 2000):
                texts.append(src[i : i + 2000])
    return texts[:limit]


def corpus(n: int = 5000, seed: int = 1234) -> list:
    """At least ``n`` strings: generated mixtures, source code and long runs."""
    rng = random.Random(seed)
    texts = [*PROSE, *CODE, *MULTILINGUAL, *EMOJI, *MARKS, *SPACES, *long_runs(), *source_files()]
    while len(texts) < n:
        r = rng.random()
        texts.append(_digits(rng) if r < 0.1 else _mixed(rng))
    return texts
