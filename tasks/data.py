"""Where task data comes from: a local copy, nanochat's download cache, or the hub.

The drop-in ``tasks.data``: it re-exports ``convpack.tasks.data`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/data.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.data import *  # noqa: F403  (re-exported)
from convpack.tasks.data import __all__  # noqa: F401
