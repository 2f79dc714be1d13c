#!/usr/bin/env python
"""Stamp every chapter's Colab badge and install cell from _config.yml (idempotent).

python scripts/stamp_chapters.py          # rewrite the chapters that need it
python scripts/stamp_chapters.py --check  # exit 1 if any chapter is out of date
"""

import argparse
import sys
from pathlib import Path

from erav1.book.layout import Book
from erav1.book.stamp import stamp_chapters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a chapter needs stamping")
    parser.add_argument("--root", default=Path(__file__).resolve().parents[1], help="the book root")
    args = parser.parse_args()
    changed = stamp_chapters(Book.at(args.root), check=args.check)
    for path in changed:
        print(f"{'needs stamping' if args.check else 'stamped'}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
