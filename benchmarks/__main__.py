"""``python -m benchmarks``: list the benchmark tools (the table that opens ``benchmarks/README.md``)."""
from __future__ import annotations

import sys

from benchmarks.lib.entry_points import listing


def main() -> int:
    print("Benchmark tools, run from the repository root (`--help` lists a tool's options; details in "
          "benchmarks/README.md, measured results in benchmarks/RESULTS.md):\n")
    print(listing(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
