"""A minimal MySQL/MariaDB client over TCP, Python standard library only.

Just enough protocol for the benchmark harness: the handshake with `mysql_native_password`
(MariaDB 10.11's default plugin), `COM_QUERY` with an OK/ERR or a result set, packets larger
than 16 MiB in both directions (the 50 MB blob), and `COM_QUIT`. No TLS, no compression, no
prepared statements: sysbench covers the query mix, this client covers what sysbench cannot
(thousands of idle sessions, reconnecting writers under failover, one huge value).

Errors:
* `ServerError(code, message)`: the server (or the proxy, for its own ERR packets) answered ERR;
* `OSError` / `ConnectionError` / `socket.timeout`: the connection failed or closed.
"""

import hashlib
import socket
import struct

CLIENT_LONG_PASSWORD = 0x1
CLIENT_LONG_FLAG = 0x4
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_MULTI_RESULTS = 0x20000
CLIENT_PLUGIN_AUTH = 0x80000

MAX_PAYLOAD = 0xFFFFFF


class ServerError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _native_password(password, scramble):
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode()).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(scramble + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


def _lenenc_int(buf, pos):
    """Reads a length-encoded integer; returns (value, new_pos)."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return struct.unpack_from("<H", buf, pos + 1)[0], pos + 3
    if first == 0xFD:
        return int.from_bytes(buf[pos + 1 : pos + 4], "little"), pos + 4
    if first == 0xFE:
        return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9
    return None, pos + 1  # 0xFB: NULL


def _err(payload):
    code = struct.unpack_from("<H", payload, 1)[0]
    rest = bytes(payload[3:])
    if rest[:1] == b"#":  # SQLSTATE marker + 5 chars
        rest = rest[6:]
    return ServerError(code, rest.decode("utf-8", "replace"))


class Connection:
    """One MySQL session. `timeout` bounds every socket operation (seconds)."""

    def __init__(self, host, port, user, password, db=None, timeout=10.0, handshake=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.seq = 0
        self.buf = bytearray()
        if handshake:
            self._handshake(user, password, db)

    # -- packets ---------------------------------------------------------------------------

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("connection closed by peer")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_packet(self):
        """One logical packet (joins 16 MiB continuation packets)."""
        payload = bytearray()
        while True:
            hdr = self._recv_exact(4)
            length = hdr[0] | hdr[1] << 8 | hdr[2] << 16
            self.seq = (hdr[3] + 1) & 0xFF
            payload += self._recv_exact(length)
            if length < MAX_PAYLOAD:
                return payload

    def _skip(self, n):
        """Consumes `n` bytes of the stream without keeping them."""
        take = min(n, len(self.buf))
        del self.buf[:take]
        n -= take
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed by peer")
            n -= len(chunk)

    def discard_packet(self):
        """Reads one logical packet without keeping it; returns (first byte, total length,
        payload if the packet is shorter than 9 bytes — OK/EOF markers — else None)."""
        first, total = None, 0
        while True:
            hdr = self._recv_exact(4)
            length = hdr[0] | hdr[1] << 8 | hdr[2] << 16
            self.seq = (hdr[3] + 1) & 0xFF
            if first is None and length < 9:
                p = self._recv_exact(length)
                return (p[0] if p else None), length, p
            if first is None:
                first = self._recv_exact(1)[0]
                self._skip(length - 1)
            else:
                self._skip(length)
            total += length
            if length < MAX_PAYLOAD:
                return first, total, None

    def write_packet(self, payload):
        view = memoryview(payload)
        while True:
            part = view[:MAX_PAYLOAD]
            view = view[MAX_PAYLOAD:]
            hdr = struct.pack("<I", len(part))[:3] + bytes([self.seq])
            self.seq = (self.seq + 1) & 0xFF
            self.sock.sendall(hdr)
            self.sock.sendall(part)
            if len(part) < MAX_PAYLOAD:
                return

    # -- session ---------------------------------------------------------------------------

    def read_greeting(self):
        """Reads the server greeting; returns (server_version, scramble)."""
        g = self.read_packet()
        if g[0] == 0xFF:
            raise _err(g)
        if g[0] != 10:
            raise ConnectionError(f"unexpected greeting protocol {g[0]}")
        end = g.index(b"\0", 1)
        version = bytes(g[1:end]).decode()
        pos = end + 1 + 4  # thread id
        scramble = bytes(g[pos : pos + 8])
        pos += 8 + 1 + 2 + 1 + 2 + 2  # filler, caps low, charset, status, caps high
        auth_len = g[pos]
        pos += 1 + 10  # auth data len, reserved (6 + MariaDB's 4 extended caps)
        rest = max(13, auth_len - 8)
        scramble += bytes(g[pos : pos + rest]).rstrip(b"\0")
        return version, scramble[:20]

    def _handshake(self, user, password, db):
        self.server_version, scramble = self.read_greeting()
        caps = (
            CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
        )
        if db:
            caps |= CLIENT_CONNECT_WITH_DB
        auth = _native_password(password, scramble)
        pkt = struct.pack("<IIB", caps, MAX_PAYLOAD, 45) + b"\0" * 23
        pkt += user.encode() + b"\0" + bytes([len(auth)]) + auth
        if db:
            pkt += db.encode() + b"\0"
        pkt += b"mysql_native_password\0"
        self.write_packet(pkt)
        resp = self.read_packet()
        if resp[0] == 0xFE and len(resp) > 1:  # auth switch request
            end = resp.index(b"\0", 1)
            plugin = bytes(resp[1:end])
            if plugin != b"mysql_native_password":
                raise ConnectionError(f"unsupported auth plugin {plugin!r}")
            self.write_packet(_native_password(password, bytes(resp[end + 1 : end + 21])))
            resp = self.read_packet()
        if resp[0] == 0xFF:
            raise _err(resp)
        if resp[0] != 0:
            raise ConnectionError(f"unexpected handshake answer 0x{resp[0]:02x}")

    def query(self, sql):
        """Runs one statement. Returns (affected_rows, None) for OK, or
        (row_count, result_bytes) for a result set, whose rows are read and discarded."""
        self.seq = 0
        self.write_packet(b"\x03" + (sql.encode() if isinstance(sql, str) else sql))
        first = self.read_packet()
        if first[0] == 0xFF:
            raise _err(first)
        if first[0] == 0x00:
            affected, _ = _lenenc_int(first, 1)
            return affected, None
        ncols, _ = _lenenc_int(first, 0)
        for _ in range(ncols):
            self.read_packet()
        head, _, small = self.discard_packet()  # EOF after column definitions
        if head != 0xFE:
            raise ConnectionError("expected EOF after column definitions")
        rows, size = 0, 0
        while True:
            head, length, small = self.discard_packet()
            if small is not None and head == 0xFE:
                return rows, size
            if head == 0xFF:  # a row never starts with 0xFF (not a valid length prefix)
                raise ServerError(0, "error inside the result set")
            rows += 1
            size += length

    def query_rows(self, sql):
        """Runs a SELECT and returns its rows as lists of str/None (small results only)."""
        self.seq = 0
        self.write_packet(b"\x03" + sql.encode())
        first = self.read_packet()
        if first[0] == 0xFF:
            raise _err(first)
        if first[0] == 0x00:
            return []
        ncols, _ = _lenenc_int(first, 0)
        for _ in range(ncols):
            self.read_packet()
        self.read_packet()  # EOF
        rows = []
        while True:
            p = self.read_packet()
            if p[0] == 0xFE and len(p) < 9:
                return rows
            if p[0] == 0xFF:
                raise _err(p)
            row, pos = [], 0
            for _ in range(ncols):
                n, pos = _lenenc_int(p, pos)
                if n is None:
                    row.append(None)
                else:
                    row.append(bytes(p[pos : pos + n]).decode("utf-8", "replace"))
                    pos += n
            rows.append(row)

    def close(self):
        try:
            self.seq = 0
            self.write_packet(b"\x01")  # COM_QUIT
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
