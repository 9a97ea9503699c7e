"""Synthetic spelling tasks over an English word list.

``SpellingBee`` asks how many times a letter occurs in a word ("how many r
in strawberry") and answers the way we want the model to work: spell the
word out, count by hand, double-check with a python call, then give the
result after ``#### ``. ``SimpleSpelling`` just spells a word out.

Examples are generated, not stored: example ``i`` of a split is drawn from a
random generator seeded by the task, the split and ``i``, so it is the same
in every process and on every machine, and train and test never share a
stream. The word list comes from the ``english-words`` package (lower-case,
letters only), or from ``words=`` / ``word_list=``.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterable
from typing import Any

from convpack.tasks.common import Conversation, Task
from convpack.tasks.gsm8k import GSM_RE, extract_answer

__all__ = [
    "ANSWER_RE",
    "LETTERS",
    "USER_MESSAGE_TEMPLATES",
    "USER_MSG_TEMPLATES",
    "SimpleSpelling",
    "SpellingBee",
    "extract_answer",
    "load_words",
]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
"""The letters a question may ask about."""
ANSWER_RE = GSM_RE
"""The answer marker, the same as GSM8K's (``#### n``)."""

# How a user may ask, in English, Spanish, Chinese, Korean, French, German and
# Japanese. {letter} and {word} are filled in (possibly quoted).
USER_MESSAGE_TEMPLATES = (
    # English
    "How many {letter} are there in {word}",
    "How many times does the letter {letter} occur in {word}",
    "Count the {letter}s in {word}",
    "Count how often {letter} shows up in the word {word}",
    "In {word}, how many times do you see {letter}",
    "What is the number of {letter} in the word {word}",
    "Tell me how many {letter} the word {word} contains",
    "How often is {letter} used in {word}",
    "Number of {letter} in {word}",
    "Please count the letter {letter} in {word}",
    # Spanish
    "¿Cuántas veces aparece la letra {letter} en {word}",
    "Cuenta las {letter} que hay en la palabra {word}",
    "¿Cuántas {letter} tiene {word}",
    # Chinese
    "{word}这个单词里有几个{letter}",
    "请数一数{word}中字母{letter}出现了几次",
    "单词{word}包含多少个{letter}",
    # Korean
    "{word}에 {letter}가 몇 개 있나요",
    "단어 {word}에서 {letter}는 몇 번 나오나요",
    # French
    "Combien de fois la lettre {letter} apparaît-elle dans {word}",
    "Compte les {letter} dans le mot {word}",
    # German
    "Wie oft kommt der Buchstabe {letter} in {word} vor",
    "Zähle die {letter} im Wort {word}",
    # Japanese
    "{word}という単語に{letter}はいくつありますか",
    "{word}の中の{letter}の数を数えてください",
)
USER_MSG_TEMPLATES = USER_MESSAGE_TEMPLATES
"""The same templates under nanochat's name (the texts are convpack's own)."""

_QUOTES = ("", "'", '"')


@functools.lru_cache(maxsize=1)
def _package_words() -> tuple[str, ...]:
    try:
        from english_words import get_english_words_set
    except ImportError as exc:
        raise FileNotFoundError(
            "SpellingBee needs a word list: install the 'english-words' package "
            "or pass word_list=<file with one word per line>"
        ) from exc
    return tuple(sorted(get_english_words_set(["web2"], alpha=True, lower=True)))


def load_words(word_list: str | os.PathLike[str] | None = None) -> list[str]:
    """The word list, sorted so that it is the same everywhere.

    Args:
        word_list: a UTF-8 text file with one word per line; by default the
            ``english-words`` package's web2 list (lower-case, letters only).

    Returns:
        The distinct non-empty words, sorted.

    Raises:
        FileNotFoundError: if the file (or the package) is missing.
        UnicodeDecodeError: if the file is not UTF-8.
    """
    if word_list is not None:
        with open(word_list, encoding="utf-8") as f:
            words = {line.strip() for line in f}
        words.discard("")
        return sorted(words)
    return list(_package_words())


class _WordTask(Task):
    """Shared arguments of the word tasks.

    Args:
        size: the number of examples (they are generated, not stored).
        split: ``"train"`` or ``"test"`` (separate random streams).
        words: the words to draw from (default: ``load_words()``).
        word_list: a file with one word per line, instead of ``words``.
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown split, a negative size or no words.
        FileNotFoundError: if the word list (file or package) is missing.
    """

    _stream = ""

    def __init__(
        self,
        size: int = 1000,
        split: str = "train",
        words: Iterable[str] | None = None,
        word_list: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"{type(self).__name__} split must be 'train' or 'test', got {split!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        self.split = split
        if words is not None:
            self.words: list[str] | tuple[str, ...] = sorted(set(words))
        elif word_list is not None:
            self.words = load_words(word_list)
        else:
            self.words = _package_words()  # shared by every instance
        if not self.words:
            raise ValueError(f"{type(self).__name__}: the word list is empty")

    def num_examples(self) -> int:
        """``size``: the number of generated examples."""
        return self.size

    @property
    def eval_type(self) -> str:
        """``"generative"``."""
        return "generative"

    def _rng(self, index: int) -> random.Random:
        # String seeds are hashed with SHA-512 by random.Random: stable
        # across processes regardless of PYTHONHASHSEED.
        return random.Random(f"{self._stream}/{self.split}/{index}")


class SpellingBee(_WordTask):
    """``SpellingBee(size=1000, split="train")``: count a letter in a word.

    Args:
        size: the number of examples (generated on access, not stored).
        split: ``"train"`` or ``"test"`` (separate random streams).
        words: the words to draw from (default: ``load_words()``).
        word_list: a file with one word per line, instead of ``words``.
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown split, a negative size or no words.
        FileNotFoundError: if the word list (file or package) is missing.
    """

    _stream = "spellingbee"

    def get_example(self, index: int) -> Conversation:
        """Example ``index``: a question in one of the templates, answered by
        a manual count, a python check and ``#### n``; the same for the same
        (split, index, word list) everywhere."""
        rng = self._rng(index)
        word = rng.choice(self.words)
        # Mostly a letter of the word; sometimes any letter, so that zero is
        # a possible answer.
        letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(LETTERS)
        template = rng.choice(USER_MESSAGE_TEMPLATES)
        if rng.random() < 0.3:
            template = template.lower()
        letter_quote = rng.choice(_QUOTES)
        word_quote = rng.choice(_QUOTES)
        question = template.format(
            letter=f"{letter_quote}{letter}{letter_quote}", word=f"{word_quote}{word}{word_quote}"
        )
        if rng.random() < 0.5:
            question += "?"
        return {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": self.answer_parts(word, letter)},
            ]
        }

    @staticmethod
    def answer_parts(word: str, letter: str) -> list[dict[str, str]]:
        """The reference answer: manual count, python check, ``#### n``.

        Args:
            word: the word.
            letter: the letter to count.

        Returns:
            The assistant content as text / python / python_output parts.
        """
        lines = [
            f"We need to count the letter '{letter}' in the word '{word}'. First by hand.",
            "",
            "Spelled out:",
            f"{word}:{','.join(word)}",
            "",
            f"Going through it and counting '{letter}':",
        ]
        running = 0
        for position, char in enumerate(word, 1):
            if char == letter:
                running += 1
                lines.append(f"{position}:{char} yes, count={running}")
            else:
                lines.append(f"{position}:{char}")
        lines.append("")
        lines.append(f"By hand the count is {running}.")
        count = word.count(letter)
        return [
            {"type": "text", "text": "\n".join(lines)},
            {"type": "text", "text": "\n\nNow let me check it with Python:\n\n"},
            {"type": "python", "text": f"'{word}'.count('{letter}')"},
            {"type": "python_output", "text": str(count)},
            {"type": "text", "text": f"\n\nPython also gives {count}.\n\nThe answer is:\n\n#### {count}"},
        ]

    def evaluate(self, conversation: Conversation, assistant_response: str) -> int:
        """Score a response against the reference count.

        Args:
            conversation: an example of this task.
            assistant_response: the model's text.

        Returns:
            1 if the response's ``#### n`` equals the reference's, else 0.

        Raises:
            TypeError: if ``assistant_response`` is not a string.
        """
        if not isinstance(assistant_response, str):
            raise TypeError(f"assistant_response must be a str, got {type(assistant_response).__name__}")
        content = conversation["messages"][-1]["content"]
        last_text = content[-1]["text"] if isinstance(content, list) else content
        ref = extract_answer(last_text)
        return int(ref is not None and extract_answer(assistant_response) == ref)

    def reward(self, conversation: Conversation, assistant_response: str) -> float:
        """The evaluation as a float reward for RL.

        Returns:
            1.0 or 0.0, as ``evaluate``; raises as ``evaluate``.
        """
        return float(self.evaluate(conversation, assistant_response))


class SimpleSpelling(_WordTask):
    """``SimpleSpelling(size=1000, split="train")``: ``Spell the word: w`` -> ``w:w,o,r,d``.

    Args:
        size: the number of examples (generated on access, not stored).
        split: ``"train"`` or ``"test"`` (separate random streams).
        words: the words to draw from (default: ``load_words()``).
        word_list: a file with one word per line, instead of ``words``.
        **kwargs: ``start``, ``stop``, ``step`` of the view (see ``Task``).

    Raises:
        ValueError: for an unknown split, a negative size or no words.
        FileNotFoundError: if the word list (file or package) is missing.
    """

    _stream = "simplespelling"

    def get_example(self, index: int) -> Conversation:
        """Example ``index``: a word to spell and its spelling."""
        word = self._rng(index).choice(self.words)
        return {
            "messages": [
                {"role": "user", "content": f"Spell the word: {word}"},
                {"role": "assistant", "content": f"{word}:{','.join(word)}"},
            ]
        }

    def evaluate(self, conversation: Conversation, assistant_response: str) -> bool:
        """Whether the response is the reference spelling.

        Args:
            conversation: an example of this task.
            assistant_response: the model's text (surrounding whitespace ignored).

        Returns:
            bool: True when it equals the reference.

        Raises:
            TypeError: if ``assistant_response`` is not a string.
        """
        if not isinstance(assistant_response, str):
            raise TypeError(f"assistant_response must be a str, got {type(assistant_response).__name__}")
        return assistant_response.strip() == conversation["messages"][-1]["content"]
