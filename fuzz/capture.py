#!/usr/bin/env python3
"""Seeds for the fuzz targets, from real client traffic: a recording TCP relay between real
clients (psql, pgbench, pgjdbc, tokio-postgres, psycopg) and a local Postgres in plaintext, whose
recorded streams are cut into each target's input format. scripts/fuzz-seeds.sh runs it.

    capture.py relay LISTEN_PORT PG_PORT OUT_DIR   # record each connection until killed
    capture.py split OUT_DIR SEEDS_DIR             # cut the recordings into seeds
"""
import hashlib
import os
import socket
import struct
import sys
import threading

MAX_SEED = 16 * 1024


def relay(listen_port, pg_port, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    count = 0
    while True:
        client, _ = server.accept()
        count += 1
        backend = socket.create_connection(("127.0.0.1", pg_port))
        name = os.path.join(out_dir, f"conn{count:04d}")
        for src, dst, suffix in ((client, backend, "client"), (backend, client, "server")):
            threading.Thread(target=pump, args=(src, dst, f"{name}.{suffix}"), daemon=True).start()


def pump(src, dst, path):
    with open(path, "wb") as out:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            out.write(data)
            out.flush()
            try:
                dst.sendall(data)
            except OSError:
                break
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def first_packets(stream):
    """The untyped packets at the start of a client stream (SSLRequest, startup), and the rest."""
    packets = []
    while len(stream) >= 8:
        (length,) = struct.unpack(">I", stream[:4])
        code = stream[4:8]
        packets.append(stream[:length])
        stream = stream[length:]
        if code not in (b"\x04\xd2\x16\x2f", b"\x04\xd2\x16\x30"):  # SSL, GSSENC requests
            break
    return packets, stream


def messages(stream):
    out = []
    while len(stream) >= 5:
        (length,) = struct.unpack(">I", stream[1:5])
        if len(stream) < 1 + length:
            break
        out.append(stream[: 1 + length])
        stream = stream[1 + length :]
    return out


def split(rec_dir, seeds_dir):
    seeds = {}

    def add(target, data):
        data = data[:MAX_SEED]
        seeds.setdefault(target, {})[hashlib.sha1(data).hexdigest()[:16]] = data

    for name in sorted(os.listdir(rec_dir)):
        if not name.endswith(".client"):
            continue
        client = open(os.path.join(rec_dir, name), "rb").read()
        server_path = os.path.join(rec_dir, name[: -len(".client")] + ".server")
        server = open(server_path, "rb").read() if os.path.exists(server_path) else b""
        packets, rest = first_packets(client)
        for p in packets:
            add("first_packet", p)
        # The server's answer to an SSLRequest is one byte, 'N' here.
        while server[:1] == b"N":
            server = server[1:]
        client_msgs, server_msgs = messages(rest), messages(server)
        # Authentication: the client's password messages, the server's R messages.
        auth_client = [m for m in client_msgs if m[:1] == b"p"]
        auth_server = []
        for m in server_msgs:
            auth_server.append(m)
            if m[:1] == b"R" and m[5:9] == b"\0\0\0\0":
                break
        after_auth = len(b"".join(auth_client))
        session_client = b"".join(client_msgs)[after_auth:]
        session_server = b"".join(server_msgs)[len(b"".join(auth_server)) :]
        if auth_client:
            add("frontend_frames", b"\x00" + b"".join(auth_client))
            add("frontend_frames", b"\x81" + b"".join(auth_client))
        r_messages = b"".join(m for m in auth_server if m[:1] == b"R")
        if r_messages:
            add("backend_auth", b"\x00" + r_messages)
            add("backend_auth", b"\x01" + r_messages)
        sasl = [m[5:] for m in auth_client]
        if len(sasl) >= 2 and b"\0" in sasl[0]:
            mech, _, rest_ = sasl[0].partition(b"\0")
            initial = rest_[4:]
            plus = 1 if mech.endswith(b"-PLUS") else 0
            add("scram_server", bytes([plus]) + initial + b"\0" + sasl[1])
        if session_client:
            add("relay_client", b"\x02" + session_client)
            add("relay_client", b"\x81" + session_client)
        if session_server:
            add("relay_backend", b"\x01" + session_server)
            add("relay_backend", b"\x03" + session_server)
        for m in messages(session_client):
            body = m[5:]
            if m[:1] == b"Q":
                add("sql", body.rstrip(b"\0"))
            elif m[:1] == b"P":
                add("sql", body.split(b"\0")[1] if body.count(b"\0") >= 2 else body)
        # A cancel request for the backend key the server handed out, as the client would send.
        for m in server_msgs:
            if m[:1] == b"K":
                add("first_packet", struct.pack(">II", 16, 80877102) + m[5:13])
    for target, files in seeds.items():
        d = os.path.join(seeds_dir, target)
        os.makedirs(d, exist_ok=True)
        for h, data in files.items():
            with open(os.path.join(d, f"traffic-{h}"), "wb") as f:
                f.write(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        relay(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        split(sys.argv[2], sys.argv[3])
