"""Minimal MQTT brokers for what Mosquitto will not do on demand.

:class:`V311OnlyBroker`, for the protocol fallback test (Mosquitto always speaks v5): it answers a
v5 CONNECT the way a 3.1.1 broker must ([MQTT-3.1.2-2]: CONNACK return code 1, "unacceptable
protocol level", then close) and accepts 3.1.1: CONNACK, SUBACK, PUBACK, PINGRESP.

:class:`V5Broker`: MQTT 5 only, answering every QoS 1 PUBLISH with the PUBACK reason code in
``puback_code`` (0x97 quota exceeded, 0x87 not authorized...); it routes nothing.
"""

from __future__ import annotations

import socket
import threading
import time


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    header = _read_exact(conn, 1)[0]
    length, mult = 0, 1
    while True:
        byte = _read_exact(conn, 1)[0]
        length += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            break
    return header, _read_exact(conn, length)


class V311OnlyBroker:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self._server = socket.create_server((self.host, 0))
        self.port = self._server.getsockname()[1]
        self.protocol_levels: list[int] = []
        self.published: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> V311OnlyBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._server.close()

    def wait_for_publish(self, topic: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while topic not in self.published:
            assert time.monotonic() < deadline, f"no PUBLISH to {topic}; got {self.published}"
            time.sleep(0.01)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            try:
                header, body = _read_packet(conn)
                assert header >> 4 == 1, "expected CONNECT"
                name_len = int.from_bytes(body[:2], "big")
                level = body[2 + name_len]
                self.protocol_levels.append(level)
                if level != 4:
                    conn.sendall(b"\x20\x02\x00\x01")  # unacceptable protocol level
                    return
                conn.sendall(b"\x20\x02\x00\x00")
                while not self._stop:
                    header, body = _read_packet(conn)
                    kind = header >> 4
                    if kind == 8:  # SUBSCRIBE -> SUBACK granting QoS 1
                        conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                    elif kind == 3:  # PUBLISH
                        topic_len = int.from_bytes(body[:2], "big")
                        self.published.append(body[2 : 2 + topic_len].decode())
                        if (header >> 1) & 3:
                            mid = body[2 + topic_len : 4 + topic_len]
                            conn.sendall(b"\x40\x02" + mid)
                    elif kind == 12:  # PINGREQ
                        conn.sendall(b"\xd0\x00")
                    elif kind == 14:  # DISCONNECT
                        return
            except (ConnectionError, OSError):
                return


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of an MQTT variable byte integer at ``pos``."""
    value, mult = 0, 1
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            return value, pos


class V5Broker(V311OnlyBroker):
    def __init__(self) -> None:
        super().__init__()
        self.puback_code = 0
        self.accepted: list[tuple[str, bytes]] = []  # PUBLISHes answered with 0x00
        self.answered: list[tuple[str, int]] = []  # every QoS 1 PUBLISH: (topic, reason code)

    def _session(self, conn: socket.socket) -> None:
        with conn:
            try:
                header, body = _read_packet(conn)
                assert header >> 4 == 1, "expected CONNECT"
                name_len = int.from_bytes(body[:2], "big")
                self.protocol_levels.append(body[2 + name_len])
                conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
                while not self._stop:
                    header, body = _read_packet(conn)
                    kind = header >> 4
                    if kind == 8:  # SUBSCRIBE -> SUBACK granting QoS 1 to every filter
                        props, pos = _varint(body, 2)
                        pos += props
                        granted = 0
                        while pos < len(body):
                            pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + 1
                            granted += 1
                        conn.sendall(bytes([0x90, 3 + granted]) + body[:2] + b"\x00" + b"\x01" * granted)
                    elif kind == 3:  # PUBLISH
                        topic_len = int.from_bytes(body[:2], "big")
                        topic = body[2 : 2 + topic_len].decode()
                        self.published.append(topic)
                        pos = 2 + topic_len
                        if not (header >> 1) & 3:
                            continue
                        mid, pos = body[pos : pos + 2], pos + 2
                        props, pos = _varint(body, pos)
                        code = self.puback_code
                        self.answered.append((topic, code))
                        if code == 0:
                            self.accepted.append((topic, body[pos + props :]))
                        conn.sendall(b"\x40\x03" + mid + bytes([code]))
                    elif kind == 12:  # PINGREQ
                        conn.sendall(b"\xd0\x00")
                    elif kind == 14:  # DISCONNECT
                        return
            except (ConnectionError, OSError):
                return
