"""Synthetic spelling tasks over an English word list.

The drop-in ``tasks.spellingbee``: it re-exports ``convpack.tasks.spellingbee`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/spellingbee.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.spellingbee import (  # noqa: F401  (re-exported)
    ANSWER_RE,
    LETTERS,
    USER_MESSAGE_TEMPLATES,
    USER_MSG_TEMPLATES,
    SimpleSpelling,
    SpellingBee,
    extract_answer,
    load_words,
)

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
