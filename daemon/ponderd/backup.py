"""`python -m ponderd.backup`: the online backup the ponder-backup unit runs (ledger/sqlite/backup.py)."""

import sys

from ponderd.ledger.sqlite.backup import main

if __name__ == "__main__":
    sys.exit(main())
