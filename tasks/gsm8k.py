"""GSM8K: grade-school math word problems with calculator annotations.

The drop-in ``tasks.gsm8k``: it re-exports ``convpack.tasks.gsm8k`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/gsm8k.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.gsm8k import (  # noqa: F401  (re-exported)
    GSM8K,
    GSM_RE,
    answer_to_parts,
    extract_answer,
)

__all__ = [
    "GSM8K",
    "GSM_RE",
    "answer_to_parts",
    "extract_answer",
]
