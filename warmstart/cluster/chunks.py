"""A model's files as lists of per-chunk sha256 digests, so a peer fetch is checked on every core at once; and the
stream itself: a peer sends every file a fetch asks for down one TCP connection, one after the other.

A whole-file sha256 runs on one core (about 0.5-2 GB/s), slower than a fast network. The head hashes its own
file (the one its manifest's sha256 names) in VERIFY_CHUNK pieces once; a node receiving the file has the
kernel move the bytes into the file (splice, on Linux) and checks each piece, from the file's pages, against
that list on a pool of threads as the next ones arrive (hashlib lets go of the GIL). Every piece matching
means the copy is byte for byte the head's file, and so has the manifest's sha256; one piece that differs
refuses the whole transfer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import select
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from warmstart.cluster.weights import ONE_FILE, WeightFile
from warmstart.errors import IntegrityError, StoreError

VERIFY_CHUNK = 16 << 20
TIMEOUT = 30.0
SOCKET_BUFFER = 4 << 20
HASHED_BUFFER = 8 << 20  # bytes per hand-over when a file is hashed whole as it arrives


def not_the_manifests(got: str, want: str) -> IntegrityError:
    """The refusal of bytes whose sha256 is not the one the manifest gives (either way they arrived)."""
    return IntegrityError(f"sha256 {got[:16]}... is not the manifest's {want[:16]}...")


def chunk_digests(path: Path) -> tuple[str, ...]:
    """The sha256 of each VERIFY_CHUNK-sized piece of the file, in order."""
    out = []
    with open(path, "rb") as f:
        while block := f.read(VERIFY_CHUNK):
            out.append(hashlib.sha256(block).hexdigest())
    return tuple(out)


def receive_files(offer: dict[str, Any], files: Sequence[tuple[WeightFile, Path]], splice: bool = True,
                  landed: Callable[[WeightFile], None] | None = None) -> None:
    """Read each file in turn from one connection to a peer's offer into its path, each piece checked against the
    file's `pieces` on a pool of threads while the next ones (of this file or the next) arrive (a file without
    pieces: one sha256 over its bytes); `landed` is told of each file, in order, once it is whole and checked.
    Raises IntegrityError when a piece or a file has another sha256, StoreError when the transfer is short or
    cut. `splice` False: through a buffer even where splice exists (the bench compares both)."""
    pending: list[tuple[WeightFile, list[Future[None]]]] = []  # received, pieces still being checked
    bad = threading.Event()  # a piece did not match: stop receiving
    with socket.create_connection((offer["host"], offer["port"]), timeout=TIMEOUT) as conn, \
            ThreadPoolExecutor(_workers(), thread_name_prefix="fetch-check") as pool:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        conn.sendall(bytes.fromhex(offer["token"]))
        try:
            for wf, partial in files:
                if bad.is_set():
                    break
                try:
                    pending.append((wf, _receive_one(conn, pool, wf, partial, splice, bad)))
                except (StoreError, OSError) as exc:
                    _settle(pending, landed, wait=True)  # a bad file before this one is the reason to give
                    raise _named(wf, exc) from None
                _settle(pending, landed, wait=False)
            _settle(pending, landed, wait=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # checks not started yet need not run
            raise


def _settle(pending: list[tuple[WeightFile, list[Future[None]]]], landed: Callable[[WeightFile], None] | None,
            wait: bool) -> None:
    """Tell `landed` of the files, in order, whose pieces have all been checked (waiting for them with `wait`);
    raises for the first whose check failed."""
    while pending and (wait or all(f.done() for f in pending[0][1])):
        wf, futures = pending.pop(0)
        for future in futures:
            try:
                future.result()
            except StoreError as exc:
                raise _named(wf, exc) from None
        if landed is not None:
            landed(wf)


def _named(wf: WeightFile, exc: BaseException) -> StoreError:
    if not isinstance(exc, StoreError):  # the peer went away, or went silent
        exc = StoreError(f"the transfer was cut: {type(exc).__name__}: {exc}")
    return type(exc)(f"{wf.path}: {exc}") if wf.path else exc  # a folder's file: say which


def receive_checked(offer: dict[str, Any], size: int, partial: Path, chunks: tuple[str, ...],
                    splice: bool = True) -> None:
    """One file of `size` bytes from a peer's offer into `partial`, each piece checked against `chunks`."""
    receive_files(offer, [(WeightFile(ONE_FILE, size, "", chunks), partial)], splice)


def _receive_one(conn: socket.socket, pool: ThreadPoolExecutor, wf: WeightFile, partial: Path, splice: bool,
                 bad: threading.Event) -> list[Future[None]]:
    """Receive one file; returns the checks of its pieces still under way (none when it was checked whole)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    if wf.pieces is None:
        got = receive_hashed(conn, wf.size, partial)
        if got != wf.sha256:
            raise not_the_manifests(got, wf.sha256)
        return []
    if len(wf.pieces) != -(-wf.size // VERIFY_CHUNK):
        raise StoreError(f"{len(wf.pieces)} chunk digests for {wf.size} bytes")
    if splice and hasattr(os, "splice") and wf.size:
        return _receive_spliced(conn, wf.size, partial, wf.pieces, pool, bad)
    _receive_buffered(conn, wf.size, partial, wf.pieces, pool)  # no splice (macOS), or nothing to splice
    return []


def preallocate(fd: int, size: int, path: Path) -> None:
    """Give the file its `size` in blocks before any byte arrives: a disk without room refuses the transfer at
    once rather than part-way, and the filesystem allocates once, not page by page as the bytes land (ext4:
    0.18 core-seconds per GB written against 0.24 for a sparse file and 0.42 for one grown by its writes)."""
    if not size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except AttributeError:  # no posix_fallocate (macOS)
        os.ftruncate(fd, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"no room for {size} bytes at {path.parent}: {os.strerror(exc.errno)}") from None
        os.ftruncate(fd, size)  # a filesystem that cannot preallocate


def _workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def _receive_spliced(conn: socket.socket, size: int, partial: Path, chunks: tuple[str, ...],
                     pool: ThreadPoolExecutor, bad: threading.Event) -> list[Future[None]]:
    """Linux: the socket's bytes moved into the file's pages by the kernel (splice, socket -> pipe -> file),
    and each whole piece hashed from those pages (mmap) on the pool: one copy of every byte fewer than
    reading into a buffer and writing it out, and what is checked is what the engine will read. Returns the
    checks still under way: the next file is received meanwhile."""
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    rd, wr = os.pipe()
    futures: list[Future[None]] = []
    done = 0
    try:
        with contextlib.suppress(OSError):  # a larger pipe: fewer round trips (at most pipe-max-size, 1 MiB)
            fcntl.fcntl(wr, fcntl.F_SETPIPE_SZ, 1 << 20)
        preallocate(fd, size, partial)
        while done < size and not bad.is_set():
            got = _splice_in(conn, wr, min(1 << 20, size - done))
            if not got:
                break
            while got:  # the pipe into the file, at its offset
                moved = os.splice(rd, fd, got, offset_dst=done, flags=os.SPLICE_F_MOVE)
                done, got = done + moved, got - moved
            while len(futures) < len(chunks) and min(size, (len(futures) + 1) * VERIFY_CHUNK) <= done:
                i = len(futures)  # a whole piece has arrived
                futures.append(pool.submit(_check_piece, partial, i, size, chunks[i], bad))
    finally:
        for handle in (fd, rd, wr):
            os.close(handle)
    if done < size and not bad.is_set():
        raise StoreError(f"got {done} bytes of {size}")
    return futures


def _check_piece(partial: Path, i: int, size: int, expected: str, bad: threading.Event) -> None:
    """Piece `i` of the file, hashed from its pages (the page cache: what was just written), against `expected`."""
    begin, end = i * VERIFY_CHUNK, min(size, (i + 1) * VERIFY_CHUNK)
    fd = os.open(partial, os.O_RDONLY)
    try:
        with mmap.mmap(fd, end - begin, prot=mmap.PROT_READ, offset=begin) as pages, memoryview(pages) as piece:
            if hashlib.sha256(piece).hexdigest() != expected:
                bad.set()
                raise IntegrityError(f"piece {i} (bytes {begin}-{end}) has another sha256")
    finally:
        os.close(fd)


def _splice_in(conn: socket.socket, pipe: int, count: int) -> int:
    """Up to `count` bytes from the socket into the pipe; 0 when the peer has closed. The socket is
    non-blocking (it has a timeout): wait for it to be readable, up to TIMEOUT."""
    while True:
        try:
            return os.splice(conn.fileno(), pipe, count, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            if not select.select([conn], [], [], TIMEOUT)[0]:
                raise StoreError(f"the peer sent nothing for {TIMEOUT:g} s") from None


def _receive_buffered(conn: socket.socket, size: int, partial: Path, chunks: tuple[str, ...],
                      pool: ThreadPoolExecutor) -> None:
    buffers: queue.Queue[bytearray] = queue.Queue()
    for _ in range(min(_workers() + 2, len(chunks))):
        buffers.put(bytearray(min(VERIFY_CHUNK, size)))
    bad: list[str] = []
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        preallocate(fd, size, partial)
    except BaseException:
        os.close(fd)
        raise

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
        raise IntegrityError("; ".join(bad[:3]))


def receive_hashed(conn: socket.socket, size: int, partial: Path) -> str:
    """Read `size` bytes from the connection into `partial`, hashing them whole; returns the sha256. The socket
    is read on one thread and hashed and written on this one (both let go of the GIL), so this runs at the
    slower of the network and sha256, not at their sum."""
    h = hashlib.sha256()
    filled: queue.Queue[tuple[memoryview, int] | BaseException | None] = queue.Queue()
    free: queue.Queue[memoryview] = queue.Queue()
    for _ in range(4):
        free.put(memoryview(bytearray(min(HASHED_BUFFER, size) or 1)))

    def read() -> None:
        total = 0
        try:
            while total < size:
                view, n = free.get(), 0
                want = min(len(view), size - total)  # never past this file: the next one follows on the stream
                while n < want and (got := conn.recv_into(view[n:want])):
                    n += got  # a whole buffer per hand-over: few, large sha256 updates
                if not n:
                    break
                total += n
                filled.put((view, n))
            filled.put(None)
        except BaseException as exc:
            filled.put(exc)

    total = 0
    with open(partial, "wb") as out:
        preallocate(out.fileno(), size, partial)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while (item := filled.get()) is not None:
            if isinstance(item, BaseException):
                raise StoreError(f"the transfer was cut: {type(item).__name__}: {item}")
            view, n = item
            h.update(view[:n])
            out.write(view[:n])
            total += n
            free.put(view)
        reader.join()
    if total != size:
        raise StoreError(f"got {total} bytes of {size}")
    return h.hexdigest()


def serve_files(server: socket.socket, token: bytes, paths: Sequence[Path]) -> None:
    """Accept one connection that starts with `token`, send it each file in turn, close (any other: closed at
    once)."""
    import hmac

    with server:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            got = b""
            while len(got) < len(token) and (part := conn.recv(len(token) - len(got))):
                got += part
            if not hmac.compare_digest(got, token):
                return
            with contextlib.suppress(OSError):  # the peer left: it sees a short transfer and refuses it
                for path in paths:
                    with open(path, "rb") as f:
                        conn.sendfile(f)  # zero-copy, from the page cache (or the RAM tier's copy)


def serve_file(server: socket.socket, token: bytes, path: Path) -> None:
    serve_files(server, token, [path])


def offer_files(host: str, paths: Sequence[Path]) -> dict[str, Any]:
    """Serve `paths`, one after the other, once on a new port of `host`, to the peer that presents the returned
    token. Raises StoreError when one of them is not here (before anything is sent)."""
    import secrets

    for path in paths:
        if not Path(path).is_file():
            raise StoreError(f"{path} is not here")
    server = socket.create_server((host, 0))
    server.settimeout(TIMEOUT)
    token = secrets.token_bytes(16)
    threading.Thread(target=serve_files, args=(server, token, list(paths)), daemon=True, name="offer").start()
    return {"host": host, "port": server.getsockname()[1], "token": token.hex()}
