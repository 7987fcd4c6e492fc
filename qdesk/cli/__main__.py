import sys

from qdesk.cli import main

sys.exit(main())
