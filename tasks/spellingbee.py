"""Synthetic spelling tasks over an English word list.

The drop-in ``tasks.spellingbee``: it re-exports ``convpack.tasks.spellingbee`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/spellingbee.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.spellingbee import *  # noqa: F403  (re-exported)
from convpack.tasks.spellingbee import __all__  # noqa: F401
