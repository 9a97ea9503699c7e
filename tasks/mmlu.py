"""MMLU: multiple-choice questions over 57 subjects.

The drop-in ``tasks.mmlu``: it re-exports ``convpack.tasks.mmlu`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/mmlu.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.mmlu import *  # noqa: F403  (re-exported)
from convpack.tasks.mmlu import __all__  # noqa: F401
