"""``python -m trackasync``: the same as the ``trackasync`` command."""

import sys

from ._cli import main

sys.exit(main())
