"""``python -m fastlcel.compare``: see ``python -m fastlcel.compare --help``."""

import sys

if __name__ == "__main__":  # a process-pool worker imports this module too: nothing to do then
    from fastlcel.compare._cli import main

    sys.exit(main())
