"""``python -m convpack``: the ``convpack`` command."""

import sys

from convpack.cli import main

sys.exit(main())
