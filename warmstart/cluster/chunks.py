"""A model's file as a list of per-chunk sha256 digests, so a peer fetch is checked on every core at once.

A whole-file sha256 runs on one core (about 0.5-2 GB/s), slower than a fast network. The head hashes its own
file (the one its manifest's sha256 names) in VERIFY_CHUNK pieces once; a node receiving the file checks each
piece against that list on a pool of threads as the bytes arrive (hashlib lets go of the GIL) and writes it
in place. Every piece matching means the copy is byte for byte the head's file, and so has the manifest's
sha256; one piece that differs refuses the whole transfer.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from warmstart.errors import StoreError

VERIFY_CHUNK = 16 << 20
TIMEOUT = 30.0


def chunk_digests(path: Path) -> tuple[str, ...]:
    """The sha256 of each VERIFY_CHUNK-sized piece of the file, in order."""
    out = []
    with open(path, "rb") as f:
        while block := f.read(VERIFY_CHUNK):
            out.append(hashlib.sha256(block).hexdigest())
    return tuple(out)


def receive_checked(offer: dict[str, Any], size: int, partial: Path, chunks: tuple[str, ...]) -> None:
    """Read `size` bytes from a peer's offer into `partial`, each piece checked against `chunks` on a pool of
    threads while the next one arrives; raises StoreError on a short transfer or a piece that differs."""
    if len(chunks) != -(-size // VERIFY_CHUNK):
        raise StoreError(f"{len(chunks)} chunk digests for {size} bytes")
    workers = max(2, min(8, os.cpu_count() or 2))
    buffers: queue.Queue[bytearray] = queue.Queue()
    for _ in range(workers + 2):
        buffers.put(bytearray(VERIFY_CHUNK))
    bad: list[str] = []
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def check(i: int, buf: bytearray, n: int) -> None:
        try:
            view = memoryview(buf)[:n]
            if hashlib.sha256(view).hexdigest() != chunks[i]:
                bad.append(f"piece {i} (bytes {i * VERIFY_CHUNK}-{i * VERIFY_CHUNK + n}) has another sha256")
            else:
                os.pwrite(fd, view, i * VERIFY_CHUNK)
        finally:
            buffers.put(buf)

    try:
        with socket.create_connection((offer["host"], offer["port"]), timeout=TIMEOUT) as conn, \
                ThreadPoolExecutor(workers, thread_name_prefix="fetch-check") as pool:
            conn.sendall(bytes.fromhex(offer["token"]))
            futures: list[Future[None]] = []
            for i in range(len(chunks)):
                want = min(VERIFY_CHUNK, size - i * VERIFY_CHUNK)
                buf = buffers.get()
                view, n = memoryview(buf), 0
                while n < want and (got := conn.recv_into(view[n:want])):
                    n += got
                if n < want:
                    buffers.put(buf)
                    raise StoreError(f"got {i * VERIFY_CHUNK + n} bytes of {size}")
                futures.append(pool.submit(check, i, buf, n))
                if bad:
                    break
            for f in futures:
                f.result()
    finally:
        os.close(fd)
    if bad:
        raise StoreError("; ".join(bad[:3]))


def serve_file(server: socket.socket, token: bytes, path: Path) -> None:
    """Accept one connection that starts with `token`, send it the file, close (any other: closed at once)."""
    import contextlib
    import hmac

    with server:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn, open(path, "rb") as f:
            conn.settimeout(TIMEOUT)
            got = b""
            while len(got) < len(token) and (part := conn.recv(len(token) - len(got))):
                got += part
            if not hmac.compare_digest(got, token):
                return
            with contextlib.suppress(OSError):  # the peer left: it sees a short transfer and refuses it
                conn.sendfile(f)  # zero-copy, from the page cache (or the RAM tier's copy)


def offer_file(host: str, path: Path) -> dict[str, Any]:
    """Serve `path` once on a new port of `host`, to the peer that presents the returned token."""
    import secrets

    server = socket.create_server((host, 0))
    server.settimeout(TIMEOUT)
    token = secrets.token_bytes(16)
    threading.Thread(target=serve_file, args=(server, token, path), daemon=True, name="offer").start()
    return {"host": host, "port": server.getsockname()[1], "token": token.hex()}
