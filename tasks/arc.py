"""ARC: grade-school science multiple-choice questions (Easy and Challenge).

The drop-in ``tasks.arc``: it re-exports ``convpack.tasks.arc`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/arc.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.arc import *  # noqa: F403  (re-exported)
from convpack.tasks.arc import __all__  # noqa: F401
