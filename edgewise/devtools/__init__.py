"""Development and test helpers for the test suite, the demo and the benchmarks: a local Mosquitto
(:mod:`.mosquitto`), a self-signed TLS certificate (:mod:`.tls`) and a throwaway PostgreSQL server
(:mod:`.postgres`).

Nothing on a device uses this package: ``edgewise.edge`` never imports it (tests/edge/test_no_torch.py
checks), and a fleet's real broker is configured with ``edge-deploy broker-acl``, not started here.
"""
