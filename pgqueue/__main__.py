import sys

from pgqueue.cli import main

sys.exit(main())
