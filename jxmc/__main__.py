import sys

from jxmc.cli import main

sys.exit(main())
