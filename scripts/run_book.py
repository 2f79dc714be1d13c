#!/usr/bin/env python
"""Execute the chapters with a profile and build the book: the same as ``erav1 book``.

python scripts/run_book.py --profile smoke -p data=../shared/data/cifar10-jpeg.zip
"""

import sys

from erav1.cli import main

if __name__ == "__main__":
    sys.exit(main(["book", *sys.argv[1:]]))
