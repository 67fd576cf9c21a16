"""A minimal Tern client, written from proto/PROTOCOL.md alone (standard library only).

It exists to prove the specification is complete: tests/spec_client.rs runs
smoke_test.py against a real broker in CI. It is deliberately small and blocking;
use it as a starting point for a client in another language.
"""

import socket
import ssl
import struct

# Version 2 adds SUBSCRIBE_FILTERED (header filters); a version 1 broker refuses it
# with UNSUPPORTED_VERSION, and the client then connects again asking for 1.
PROTOCOL_VERSION = 2
UNSUPPORTED_VERSION = 1
ROLE_PRODUCER, ROLE_CONSUMER, ROLE_BOTH = 1, 2, 3
MODE_DEFAULT, MODE_BROADCAST, MODE_QUEUE = 0, 1, 2

# Opcodes (PROTOCOL.md section 3).
HELLO, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, CREDIT = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
SUBSCRIBE_FILTERED = 0x0B
PING, PONG = 0x10, 0x11
WELCOME, DELIVER, PUBLISH_OK, PUBLISH_ERROR = 0x81, 0x82, 0x83, 0x84
SUBSCRIBE_OK, LAGGED, ERROR, GOODBYE = 0x85, 0x86, 0x87, 0x88


class TernError(Exception):
    """An ERROR or PUBLISH_ERROR frame from the broker."""

    def __init__(self, code, message, context=0):
        super().__init__(f"{message} (code {code})")
        self.code, self.message, self.context = code, message, context


def _string(text):
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def _headers(headers):
    out = struct.pack(">H", len(headers))
    for name, value in headers:
        out += _string(name) + _string(value)
    return out


def _frame(opcode, body=b""):
    return struct.pack(">IB", 1 + len(body), opcode) + body


class _Reader:
    def __init__(self, body):
        self.body, self.pos = body, 0

    def take(self, count):
        if self.pos + count > len(self.body):
            raise ValueError("truncated frame")
        chunk = self.body[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def string(self):
        return self.take(self.u16()).decode("utf-8")

    def headers(self):
        return [(self.string(), self.string()) for _ in range(self.u16())]

    def rest(self):
        return self.body[self.pos:]


class Message:
    def __init__(self, sid, delivery_id, redelivered, subject, reply_to, headers, payload):
        self.sid, self.delivery_id, self.redelivered = sid, delivery_id, redelivered
        self.subject, self.reply_to, self.headers, self.payload = subject, reply_to, headers, payload


def tls_context(ca_file=None, cert_file=None, key_file=None):
    """A client TLS context: TLS 1.2 or newer, trusting `ca_file` (default: the system's
    CAs), presenting `cert_file`/`key_file` when the broker requires client certificates."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class Client:
    def __init__(self, host, port, name="python", role=ROLE_BOTH, timeout=5.0, version=PROTOCOL_VERSION,
                 token="", tls=None):
        """Connects and handshakes. `token`: HELLO's auth_token, for a broker with an
        auth file (PROTOCOL.md section 5). `tls`: speak TLS from the first byte (section 1),
        either an ssl.SSLContext or a dict with `ca_file`, optional `cert_file` and
        `key_file` (mutual TLS) and `server_name` (default: host)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            context = tls if isinstance(tls, ssl.SSLContext) else tls_context(**{
                k: v for k, v in tls.items() if k != "server_name"})
            server_name = host if isinstance(tls, ssl.SSLContext) else tls.get("server_name", host)
            sock = context.wrap_socket(sock, server_hostname=server_name)
        self.sock = sock
        self.buffer = b""
        self.sequence = 0
        self.next_sid = 1
        self.pending = []  # frames received while waiting for something else
        self.sock.sendall(_frame(HELLO, struct.pack(">HB", version, role) + _string(name) + _string(token)))
        opcode, body = self._read_frame()
        if opcode == ERROR:
            error = self._error(body)
            if error.code == UNSUPPORTED_VERSION and version > 1:
                self.sock.close()
                self.__init__(host, port, name, role, timeout, version=1, token=token, tls=tls)
                return
            raise error
        if opcode != WELCOME:
            raise ValueError(f"expected WELCOME, got opcode {opcode:#x}")
        r = _Reader(body)
        self.version, self.connection_id = r.u16(), r.u64()
        self.max_frame_bytes, self.max_subject_length = r.u32(), r.u16()
        self.max_subscriptions, self.default_prefetch = r.u32(), r.u32()
        self.server_name = r.string()

    # -- framing -----------------------------------------------------------
    def _read_exact(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _read_frame(self):
        (length,) = struct.unpack(">I", self._read_exact(4))
        body = self._read_exact(length)
        return body[0], body[1:]

    @staticmethod
    def _error(body):
        r = _Reader(body)
        code, context, message = r.u16(), r.u64(), r.string()
        return TernError(code, message, context)

    def _next(self, wanted):
        """Reads frames until one with an opcode in `wanted`; answers PINGs; keeps the rest."""
        for index, (opcode, body) in enumerate(self.pending):
            if opcode in wanted:
                del self.pending[index]
                return opcode, body
        while True:
            opcode, body = self._read_frame()
            if opcode == PING:
                self.sock.sendall(_frame(PONG))
            elif opcode in wanted:
                return opcode, body
            elif opcode == ERROR and ERROR not in wanted:
                raise self._error(body)
            else:
                self.pending.append((opcode, body))

    # -- operations --------------------------------------------------------
    def publish(self, subject, payload, reply_to=None, headers=(), confirm=False):
        sequence = 0
        if confirm:
            self.sequence += 1
            sequence = self.sequence
        body = struct.pack(">Q", sequence) + _string(subject) + _string(reply_to or "") + _headers(list(headers)) + payload
        self.sock.sendall(_frame(PUBLISH, body))
        if confirm:
            while True:
                opcode, body = self._next({PUBLISH_OK, PUBLISH_ERROR})
                r = _Reader(body)
                if r.u64() != sequence:
                    continue
                if opcode == PUBLISH_OK:
                    return
                code, message = r.u16(), r.string()
                raise TernError(code, message)

    def subscribe(self, pattern, mode=MODE_BROADCAST, queue=None, prefetch=0, filter=None):
        """Subscribes; with `filter` (PROTOCOL.md section 7, "Header filters", e.g.
        "device = 'd1'") only messages whose headers match are delivered."""
        sid = self.next_sid
        self.next_sid += 1
        body = struct.pack(">IBI", sid, mode, prefetch) + _string(pattern) + _string(queue or "")
        if filter is None:
            self.sock.sendall(_frame(SUBSCRIBE, body))
        else:
            if self.version < 2:
                raise TernError(0, "header filters need protocol version 2; the broker speaks 1")
            self.sock.sendall(_frame(SUBSCRIBE_FILTERED, body + _string(filter)))
        while True:
            opcode, body = self._next({SUBSCRIBE_OK, ERROR})
            if opcode == ERROR:
                raise self._error(body)  # its context is this subscription's id
            if _Reader(body).u32() == sid:
                return sid

    def next_message(self):
        opcode, body = self._next({DELIVER})
        r = _Reader(body)
        sid, delivery_id, flags = r.u32(), r.u64(), r.u8()
        subject, reply_to, headers = r.string(), r.string() or None, r.headers()
        return Message(sid, delivery_id, bool(flags & 1), subject, reply_to, headers, r.rest())

    def ack(self, delivery_id):
        self.sock.sendall(_frame(ACK, struct.pack(">Q", delivery_id)))

    def nack(self, delivery_id, requeue=True):
        self.sock.sendall(_frame(NACK, struct.pack(">QB", delivery_id, 1 if requeue else 0)))

    def ping(self):
        self.sock.sendall(_frame(PING))
        self._next({PONG})

    def next_error(self):
        opcode, body = self._next({ERROR})
        return self._error(body)

    def close(self):
        self.sock.close()
