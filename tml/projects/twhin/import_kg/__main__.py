"""``python -m tml.projects.twhin.import_kg``: run the command line."""

import sys

from tml.projects.twhin.import_kg.cli import main

if __name__ == "__main__":
    sys.exit(main())
