"""``python -m edgewise.cloud.fleet ingest|fleet ...``: the fleet's commands without the CLI table."""

import sys

from edgewise.cloud.fleet.commands import main

sys.exit(main())
