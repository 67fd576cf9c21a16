#!/usr/bin/env python3
"""Resident memory per idle subscriber connection, for Tern and nats-server.

Opens N connections to a server, each with one subscription, waits until the
server's RSS settles, and reports (RSS after - RSS before) / N in KiB.

Usage: idle_memory.py {tern|nats} HOST:PORT SERVER_PID [N]
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "python"))
import tern_client  # noqa: E402  (written from proto/PROTOCOL.md)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def settled_rss(pid):
    previous, same = rss_kib(pid), 0
    for _ in range(50):
        time.sleep(0.1)
        now = rss_kib(pid)
        same = same + 1 if now == previous else 0
        if same >= 5:
            return now
        previous = now
    return previous


def open_tern(host, port, index):
    client = tern_client.Client(host, port, name=f"idle-{index}")
    client.subscribe(f"idle.{index}")
    client.ping()  # the subscription is in place once PONG comes back
    return client


def open_nats(host, port, index):
    connection = socket.create_connection((host, port))
    connection.recv(4096)  # INFO
    connection.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                       + f"SUB idle.{index} 1\r\nPING\r\n".encode())
    reply = b""
    while b"PONG" not in reply:
        reply += connection.recv(4096)
    return connection


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    kind, address, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    host, port = address.rsplit(":", 1)
    opener = open_tern if kind == "tern" else open_nats
    before = settled_rss(pid)
    connections = [opener(host, int(port), index) for index in range(count)]
    after = settled_rss(pid)
    per_connection = (after - before) / count
    print(f"{kind}: {count} idle subscribers, RSS {before} KiB -> {after} KiB, "
          f"{per_connection:.1f} KiB per connection")
    print(f"RESULT {kind} {per_connection:.2f}")
    del connections
    return 0


if __name__ == "__main__":
    sys.exit(main())
