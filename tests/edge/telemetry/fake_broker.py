"""A minimal MQTT 3.1.1-only broker, for the protocol fallback test (Mosquitto always speaks v5).

It answers a v5 CONNECT the way a 3.1.1 broker must ([MQTT-3.1.2-2]: CONNACK return code 1,
"unacceptable protocol level", then close) and accepts 3.1.1: CONNACK, SUBACK, PUBACK, PINGRESP.
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
