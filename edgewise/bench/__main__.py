"""``python -m edgewise.bench``: ``edgewise bench`` without the CLI entry point (used over ssh)."""

import sys

from edgewise.bench.commands import main

sys.exit(main())
