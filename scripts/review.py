"""Open the demo's review page for one reader (after ``make demo``).

Run: ``python scripts/review.py "Your Name"`` — the same as ``xmed-review reader outputs/demo/review "Your Name"``
(which prints your private link) followed by ``xmed-review serve outputs/demo/review``.
"""

import sys

from xmed.cli.review import main

if __name__ == "__main__":
    session = "outputs/demo/review"
    status = main(["reader", session, " ".join(sys.argv[1:]) or "Demo reader"])
    sys.exit(status or main(["serve", session]))
