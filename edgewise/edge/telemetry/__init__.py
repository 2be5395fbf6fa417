"""MQTT telemetry for the edge daemon, one job a module:

* :mod:`.config`: ``TelemetryConfig`` (broker, device, delivery settings);
* :mod:`.topics`: the topic tree; :mod:`.schema`: the versioned payloads and bounded JSON decoding;
* :mod:`.outbox`: the disk queue every message goes through;
* :mod:`.commands`: command bytes in, one ``command_ack`` out;
* :mod:`.client`: the MQTT session, the pump that delivers the outbox, the command worker.

``edgewise.edge`` does not import this package (paho-mqtt is only needed where telemetry runs);
import the modules directly::

    from edgewise.edge.telemetry.client import TelemetryClient
    from edgewise.edge.telemetry.config import TelemetryConfig
"""
