"""Fleet keys, a broker and daemon processes: the security, telemetry and daemon tests' fixtures
(imported, not copied)."""

from tests.edge.daemon.conftest import daemons  # noqa: F401  (fixture)
from tests.edge.security.conftest import keys  # noqa: F401  (fixture)
from tests.edge.telemetry.conftest import broker, make_broker  # noqa: F401  (fixtures)
