"""GSM8K: grade-school math word problems with calculator annotations.

The drop-in ``tasks.gsm8k``: it re-exports ``convpack.tasks.gsm8k`` (see that
module for the documentation). ``tasks`` is a namespace package, so a local
``tasks/gsm8k.py`` in the directory a script runs from is imported instead of
this file; see ``convpack.tasks`` for how the two merge.
"""

from convpack.tasks.gsm8k import *  # noqa: F403  (re-exported)
from convpack.tasks.gsm8k import __all__  # noqa: F401
