"""Exercises tern_client.py's TLS and token support (PROTOCOL.md sections 1 and 5)
against a live broker started with TLS_CERT_FILE/TLS_KEY_FILE and an AUTH_FILE in
which TOKEN's user may publish and subscribe to secure.> only.

Usage: python3 smoke_secure.py HOST:PORT CA_FILE TOKEN   (exit code 0 = every check passed)
"""

import sys

from tern_client import Client, TernError

AUTHENTICATION_FAILED, TLS_REQUIRED, PERMISSION_DENIED = 11, 12, 200


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok - {what}")


def main(address, ca_file, token):
    host, port = address.rsplit(":", 1)
    port = int(port)
    tls = {"ca_file": ca_file, "server_name": "localhost"}

    sub = Client(host, port, "py-secure-sub", token=token, tls=tls)
    check(sub.version == 2, "TLS handshake, then HELLO with a token: WELCOME")
    sub.subscribe("secure.*")
    pub = Client(host, port, "py-secure-pub", token=token, tls=tls)
    pub.publish("secure.hello", b"over tls", confirm=True)
    check(sub.next_message().payload == b"over tls", "a message over TLS")
    try:
        pub.publish("elsewhere.x", b"no", confirm=True)
        check(False, "a publish outside the user's subjects")
    except TernError as error:
        check(error.code == PERMISSION_DENIED and "elsewhere.x" in error.message,
              "PERMISSION_DENIED on the exact publish, naming the subject")
    pub.ping()
    check(True, "the connection stays open after a refusal")
    try:
        Client(host, port, "py-wrong", token="not-the-token", tls=tls)
        check(False, "a wrong token")
    except TernError as error:
        check(error.code == AUTHENTICATION_FAILED, "a wrong token: AUTHENTICATION_FAILED")
    try:
        Client(host, port, "py-plain", token=token)
        check(False, "plaintext on the TLS port")
    except TernError as error:
        check(error.code == TLS_REQUIRED, "plaintext on the TLS port: TLS_REQUIRED, in the clear")
    sub.close()
    pub.close()
    print("all checks passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
