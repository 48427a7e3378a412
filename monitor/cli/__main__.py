"""``python -m monitor.cli``: the nanomaps command."""

import sys

from monitor.cli import main

sys.exit(main())
