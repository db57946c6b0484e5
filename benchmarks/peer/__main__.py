"""``python -m benchmarks.peer``: see :mod:`benchmarks.peer.cli`."""
import sys

from benchmarks.peer.cli import main

sys.exit(main())
