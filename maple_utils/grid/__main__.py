import sys

from maple_utils.grid.cli import main

sys.exit(main())
