"""HumanEval: 164 Python programming problems checked by unit tests.

The drop-in ``tasks.humaneval``: it re-exports ``convpack.tasks.humaneval`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/humaneval.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.humaneval import *  # noqa: F403  (re-exported)
from convpack.tasks.humaneval import __all__  # noqa: F401
