"""Exercises tern_client.py (written from PROTOCOL.md alone) against a live broker.

Usage: python3 smoke_test.py HOST:PORT   (exit code 0 = every check passed)
"""

import sys

from tern_client import (Client, TernError, MODE_QUEUE, ROLE_PRODUCER)

ERROR_CODES = {"INVALID_FILTER": 104, "INVALID_SUBJECT": 100, "WILDCARD_IN_SUBJECT": 101, "PERMISSION_DENIED": 200,
               "UNKNOWN_DELIVERY": 400, "NO_RESPONDERS": 501}


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok - {what}")


def main(address):
    host, port = address.rsplit(":", 1)
    port = int(port)

    sub = Client(host, port, "py-sub")
    check(sub.version == 2 and sub.connection_id > 0, "handshake: WELCOME with the version asked for and a connection id")
    sub.subscribe("orders.*")
    pub = Client(host, port, "py-pub")
    for n in range(100):
        pub.publish(f"orders.{'eu' if n % 2 else 'us'}", f"order-{n}".encode(), headers=[("n", str(n))])
    pub.publish("orders.done", b"last", confirm=True)
    got = [sub.next_message() for _ in range(101)]
    check([m.payload for m in got[:100]] == [f"order-{n}".encode() for n in range(100)], "broadcast: 100 messages in order")
    check(got[5].headers == [("n", "5")] and got[5].subject == "orders.eu", "broadcast: subject and headers")

    # Queue: deliveries with ids, nack requeues with the redelivered flag, ack settles.
    worker = Client(host, port, "py-worker")
    worker.subscribe("", mode=MODE_QUEUE, queue="py.jobs", prefetch=1)
    pub.publish("py.jobs", b"job-1", confirm=True)
    first = worker.next_message()
    check(first.delivery_id != 0 and not first.redelivered, "queue: delivery id, not redelivered")
    worker.nack(first.delivery_id, requeue=True)
    again = worker.next_message()
    check(again.payload == b"job-1" and again.redelivered, "queue: nack requeues, flagged redelivered")
    worker.ack(again.delivery_id)
    worker.ack(again.delivery_id)
    error = worker.next_error()
    check(error.code == ERROR_CODES["UNKNOWN_DELIVERY"] and error.context == again.delivery_id, "queue: double ack is UNKNOWN_DELIVERY")

    # Request/reply.
    responder = Client(host, port, "py-responder")
    responder.subscribe("py.echo")
    requester = Client(host, port, "py-requester")
    requester.subscribe("_INBOX.py.*")
    requester.publish("py.echo", b"hello", reply_to="_INBOX.py.1", confirm=True)
    request = responder.next_message()
    responder.publish(request.reply_to, request.payload.upper())
    reply = requester.next_message()
    check(reply.payload == b"HELLO" and reply.subject == "_INBOX.py.1", "request/reply round trip")
    try:
        requester.publish("py.nobody", b"?", reply_to="_INBOX.py.2", confirm=True)
        check(False, "no responders")
    except TernError as error:
        check(error.code == ERROR_CODES["NO_RESPONDERS"], "request with nobody listening: NO_RESPONDERS")

    # Errors keep the connection open.
    for subject, code in [("a..b", "INVALID_SUBJECT"), ("a.*", "WILDCARD_IN_SUBJECT")]:
        try:
            pub.publish(subject, b"x", confirm=True)
            check(False, subject)
        except TernError as error:
            check(error.code == ERROR_CODES[code], f"publish to {subject!r}: {code}")
    # Header filters (version 2): each device's consumer of one queue gets its own.
    check(pub.version == 2, "the broker speaks protocol version 2")
    devices = {}
    for device in ("d1", "d2"):
        devices[device] = Client(host, port, f"py-{device}")
        devices[device].subscribe("", mode=MODE_QUEUE, queue="py.events", prefetch=10,
                                  filter=f"user = 'u1' AND device = '{device}'")
    for n, device in enumerate(["d1", "d2", "d1", "d3"]):
        pub.publish("py.events", f"{device}:{n}".encode(), headers=[("user", "u1"), ("device", device)], confirm=True)
    got = [devices["d1"].next_message().payload for _ in range(2)]
    check(got == [b"d1:0", b"d1:2"], "a filtered queue consumer gets exactly its own messages, in order")
    check(devices["d2"].next_message().payload == b"d2:1", "and the other device gets its own")
    try:
        devices["d1"].subscribe("py.x", filter="device = d1")
        check(False, "a bad filter")
    except TernError as error:
        check(error.code == ERROR_CODES["INVALID_FILTER"] and "at byte 9" in error.message, "a bad filter: INVALID_FILTER with its position")
    old = Client(host, port, "py-v1", version=1)
    check(old.version == 1, "a version 1 connection still works")
    old.close()
    for client in devices.values():
        client.close()

    producer = Client(host, port, "py-producer", role=ROLE_PRODUCER)
    try:
        producer.subscribe("x")
        check(False, "producer subscribing")
    except TernError as error:
        check(error.code == ERROR_CODES["PERMISSION_DENIED"], "a PRODUCER may not subscribe")
    producer.ping()
    check(True, "connection still open after errors (PING/PONG)")
    for client in (sub, pub, worker, responder, requester, producer):
        client.close()
    print("all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
