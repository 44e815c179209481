"""``python -m benchmarks``: see :mod:`benchmarks.runner`."""

import sys

from benchmarks.runner import main

if __name__ == "__main__":  # not in the processes a benchmark spawns, which import this module again
    sys.exit(main())
