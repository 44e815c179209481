"""Redraw the README's contact sheet: 16 phantom eyes at 512 px.

Run: ``python scripts/make_contact_sheet.py`` (same as ``xmed-data sheet --out docs/phantom_contact_sheet.jpg``).
"""

import sys

from xmed.cli.data import main

if __name__ == "__main__":
    sys.exit(main(["sheet", "--out", "docs/phantom_contact_sheet.jpg", "--n", "16", "--size", "512", "--seed", "0"]))
