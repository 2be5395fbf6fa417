"""Fleet keys and signed bundle copies: the security tests' fixtures (imported, not copied)."""

from tests.edge.security.conftest import keys  # noqa: F401  (fixture)
