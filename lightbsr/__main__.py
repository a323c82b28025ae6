import sys

from lightbsr.cli import main

sys.exit(main())
