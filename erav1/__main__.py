import sys

from erav1.cli import main

sys.exit(main())
