"""``python -m edgewise.cloud.serve serve|serve-init ...``: the commands of :mod:`.commands`."""

import sys

from edgewise.cloud.serve.commands import main

sys.exit(main())
