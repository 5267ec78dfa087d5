"""``python -m mpicomp``: the same command line as the ``mpicomp`` script."""

import sys

from .cli import main

sys.exit(main())
