import sys

from georouter.cli import main

sys.exit(main())
