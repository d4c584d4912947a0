"""A model's file as a list of per-chunk sha256 digests, so a peer fetch is checked on every core at once.

A whole-file sha256 runs on one core (about 0.5-2 GB/s), slower than a fast network. The head hashes its own
file (the one its manifest's sha256 names) in VERIFY_CHUNK pieces once; a node receiving the file has the
kernel move the bytes into the file (splice, on Linux) and checks each piece, from the file's pages, against
that list on a pool of threads as the next ones arrive (hashlib lets go of the GIL). Every piece matching
means the copy is byte for byte the head's file, and so has the manifest's sha256; one piece that differs
refuses the whole transfer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import queue
import select
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from warmstart.errors import StoreError

VERIFY_CHUNK = 16 << 20
TIMEOUT = 30.0
SOCKET_BUFFER = 4 << 20


def chunk_digests(path: Path) -> tuple[str, ...]:
    """The sha256 of each VERIFY_CHUNK-sized piece of the file, in order."""
    out = []
    with open(path, "rb") as f:
        while block := f.read(VERIFY_CHUNK):
            out.append(hashlib.sha256(block).hexdigest())
    return tuple(out)


def receive_checked(offer: dict[str, Any], size: int, partial: Path, chunks: tuple[str, ...],
                    splice: bool = True) -> None:
    """Read `size` bytes from a peer's offer into `partial`, each piece checked against `chunks` on a pool of
    threads while the next one arrives; raises StoreError on a short transfer or a piece that differs.
    `splice` False: through a buffer even where splice exists (the bench compares both)."""
    if len(chunks) != -(-size // VERIFY_CHUNK):
        raise StoreError(f"{len(chunks)} chunk digests for {size} bytes")
    with socket.create_connection((offer["host"], offer["port"]), timeout=TIMEOUT) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        conn.sendall(bytes.fromhex(offer["token"]))
        if splice and hasattr(os, "splice") and size:
            _receive_spliced(conn, size, partial, chunks)
        else:  # no splice (macOS): through a buffer of our own
            _receive_buffered(conn, size, partial, chunks)


def _workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def _receive_spliced(conn: socket.socket, size: int, partial: Path, chunks: tuple[str, ...]) -> None:
    """Linux: the socket's bytes moved into the file's pages by the kernel (splice, socket -> pipe -> file),
    and each whole piece hashed from those pages (mmap) on the pool: one copy of every byte fewer than
    reading into a buffer and writing it out, and what is checked is what the engine will read."""
    bad: list[str] = []
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    rd, wr = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a larger pipe: fewer round trips (at most pipe-max-size, 1 MiB)
            fcntl.fcntl(wr, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as pages, ThreadPoolExecutor(_workers(), thread_name_prefix="fetch-check") as pool:
            def check(i: int) -> None:
                begin, end = i * VERIFY_CHUNK, min(size, (i + 1) * VERIFY_CHUNK)
                with memoryview(pages) as view, view[begin:end] as piece:
                    if hashlib.sha256(piece).hexdigest() != chunks[i]:
                        bad.append(f"piece {i} (bytes {begin}-{end}) has another sha256")

            futures: list[Future[None]] = []
            done = 0
            while done < size and not bad:
                got = _splice_in(conn, wr, min(1 << 20, size - done))
                if not got:
                    break
                while got:  # the pipe into the file, at its offset
                    moved = os.splice(rd, fd, got, offset_dst=done, flags=os.SPLICE_F_MOVE)
                    done, got = done + moved, got - moved
                while len(futures) < len(chunks) and min(size, (len(futures) + 1) * VERIFY_CHUNK) <= done:
                    futures.append(pool.submit(check, len(futures)))  # a whole piece has arrived
            for f in futures:
                f.result()
    finally:
        for handle in (fd, rd, wr):
            os.close(handle)
    if bad:
        raise StoreError("; ".join(bad[:3]))
    if done < size:
        raise StoreError(f"got {done} bytes of {size}")


def _splice_in(conn: socket.socket, pipe: int, count: int) -> int:
    """Up to `count` bytes from the socket into the pipe; 0 when the peer has closed. The socket is
    non-blocking (it has a timeout): wait for it to be readable, up to TIMEOUT."""
    while True:
        try:
            return os.splice(conn.fileno(), pipe, count, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            if not select.select([conn], [], [], TIMEOUT)[0]:
                raise StoreError(f"the peer sent nothing for {TIMEOUT:g} s") from None


def _receive_buffered(conn: socket.socket, size: int, partial: Path, chunks: tuple[str, ...]) -> None:
    workers = _workers()
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
        with ThreadPoolExecutor(workers, thread_name_prefix="fetch-check") as pool:
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
    import hmac

    with server:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn, open(path, "rb") as f:
            conn.settimeout(TIMEOUT)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
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
