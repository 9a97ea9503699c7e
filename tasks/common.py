"""The Task base class, mixtures and sequences of tasks, and shared helpers.

The drop-in ``tasks.common``: it re-exports ``convpack.tasks.common`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/common.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.common import *  # noqa: F403  (re-exported)
from convpack.tasks.common import __all__  # noqa: F401
