"""`python -m ponderd`: the same as `ponderd`."""

import sys

from ponderd.cli import main

sys.exit(main())
