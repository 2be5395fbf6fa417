"""Edge-to-cloud offload: the device answers first and asks the cloud when its own model declines.

- :mod:`.config`: the ``offload:`` section (device profile, overridden by ``daemon.yaml``);
- :mod:`.rules`: when each task declines (SER: low confidence; rec: more than the bundle gives);
- :mod:`.cascade`: :class:`~.cascade.Offload`, the cascade with retries, backoff, a circuit
  breaker and the fallback to the device's answer in bounded time; every result says its ``source``;
- :mod:`.http_route` (urllib and ssl only) and :mod:`.mqtt_route` (through the daemon's broker
  connection): the two ways to the cloud;
- :mod:`.wire`: the endpoints, the reply checks and the MQTT envelopes;
- :mod:`.describe`: the ``describe`` command's arguments (image and video: cloud only).

Nothing here imports torch; the HTTP route needs nothing beyond the standard library.
"""

from edgewise.edge.offload.config import OffloadConfig, resolve_offload

__all__ = ["OffloadConfig", "resolve_offload"]
