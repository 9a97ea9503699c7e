"""Conversations from a local JSONL file.

The drop-in ``tasks.customjson``: it re-exports ``convpack.tasks.customjson`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/customjson.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.customjson import *  # noqa: F403  (re-exported)
from convpack.tasks.customjson import __all__  # noqa: F401
