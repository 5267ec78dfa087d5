"""``mpicomp`` command line with the test-only methods of ``tests/methods_for_tests.py`` registered."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.methods_for_tests  # noqa: F401  (registers the test methods)
from mpicomp.cli import main

if __name__ == "__main__":
    sys.exit(main())
