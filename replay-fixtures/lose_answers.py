#!/usr/bin/env python3
"""Used by record.sh: on 127.0.0.1:PORT, forwards each HTTP request to the vault at URL and drops
the answer once the vault has sent it, as a connection cut after the vault did the work.
Usage: lose_answers.py PORT URL"""

import socket, sys, threading
port, upstream = int(sys.argv[1]), sys.argv[2].removeprefix("http://")
host, upstream_port = upstream.rsplit(":", 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()


def handle(client):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return client.close()
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
    length = next((int(l.split(b":", 1)[1]) for l in lines if l.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += client.recv(65536)
    vault = socket.create_connection((host, int(upstream_port)))
    vault.sendall(b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + body)
    while vault.recv(65536):
        pass
    vault.close()
    client.close()


while True:
    client, _ = server.accept()
    threading.Thread(target=handle, args=(client,), daemon=True).start()
