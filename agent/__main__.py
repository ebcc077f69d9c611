"""``python -m agent`` runs the same CLI as the ``goodhart-agent`` console script."""

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
