"""`python -m server [options]`: the same server and options as `fastdraft serve`."""

import sys

from server.cli import main

sys.exit(main())
