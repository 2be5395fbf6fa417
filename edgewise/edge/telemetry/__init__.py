"""MQTT telemetry for the edge daemon: topics, versioned payloads, a disk outbox and the client.

``edgewise.edge`` does not import this package (paho-mqtt is only needed where telemetry runs);
import the modules directly::

    from edgewise.edge.telemetry.client import TelemetryClient, TelemetryConfig
"""
