"""Development and test helpers: a local Mosquitto for the test suite, the demo and the benchmarks.

Nothing on a device uses this package: ``edgewise.edge`` never imports it (tests/edge/test_no_torch.py
checks), and a fleet's real broker is configured with ``edge-deploy broker-acl``, not started here.
"""
