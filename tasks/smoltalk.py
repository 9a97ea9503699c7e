"""SmolTalk: general multi-turn chat conversations.

The drop-in ``tasks.smoltalk``: it re-exports ``convpack.tasks.smoltalk`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/smoltalk.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.smoltalk import *  # noqa: F403  (re-exported)
from convpack.tasks.smoltalk import __all__  # noqa: F401
