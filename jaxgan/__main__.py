"""``python -m jaxgan COMMAND [ARGS]``: the same as the ``jaxgan`` command."""

import sys

from jaxgan.cli import main

if __name__ == "__main__":
    sys.exit(main())
