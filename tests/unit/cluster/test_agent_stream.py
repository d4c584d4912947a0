"""The agents' direct stream (warmstart.cluster.agent): a one-shot TCP offer of a file, read and hashed as it
arrives. Real sockets on loopback; no Ray (the offer is made the way the agent makes it)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from warmstart.cluster import chunks
from warmstart.cluster.agent import _receive
from warmstart.cluster.chunks import VERIFY_CHUNK, chunk_digests, receive_checked, serve_file
from warmstart.errors import StoreError


@pytest.fixture(params=["splice", "buffered"])
def path_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The pieces are received by splice into the file (Linux) or through a buffer (where there is no splice)."""
    if request.param == "buffered":
        monkeypatch.delattr(os, "splice", raising=False)
    elif not hasattr(os, "splice"):
        pytest.skip("no os.splice here")
    return str(request.param)


def offer(path: Path, token: bytes = b"t" * 16) -> dict:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    threading.Thread(target=serve_file, args=(server, token, path), daemon=True).start()
    return {"host": "127.0.0.1", "port": server.getsockname()[1], "token": token.hex()}


def test_a_file_arrives_whole_with_its_sha256(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(os.urandom(20 << 20) + b"tail")  # more than one buffer, not a multiple of one
    got = _receive(offer(src), src.stat().st_size, tmp_path / "w.partial")
    assert got == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (tmp_path / "w.partial").read_bytes() == src.read_bytes()


def test_a_short_transfer_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(StoreError, match="got 1000 bytes of 2000"):
        _receive(offer(src), 2000, tmp_path / "w.partial")


def test_a_peer_without_the_token_gets_nothing(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(b"secret weights")
    o = offer(src, token=b"a" * 16)
    o["token"] = (b"b" * 16).hex()
    with pytest.raises(StoreError, match="got 0 bytes of 14"):
        _receive(o, 14, tmp_path / "w.partial")


def test_pieces_checked_on_a_pool_of_threads_give_the_head_file(tmp_path: Path, path_taken: str) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(os.urandom(3 * VERIFY_CHUNK + 12345))
    out = tmp_path / "w.partial"
    receive_checked(offer(src), src.stat().st_size, out, chunk_digests(src))
    assert out.read_bytes() == src.read_bytes()


def test_a_piece_that_differs_refuses_the_transfer(tmp_path: Path, path_taken: str) -> None:
    head, peer = tmp_path / "head.gguf", tmp_path / "peer.gguf"
    data = bytearray(os.urandom(2 * VERIFY_CHUNK + 7))
    head.write_bytes(data)
    data[VERIFY_CHUNK + 100] ^= 0xFF  # one byte of the second piece
    peer.write_bytes(data)
    with pytest.raises(StoreError, match=r"piece 1 \(bytes 16777216-33554432\) has another sha256"):
        receive_checked(offer(peer), len(data), tmp_path / "w.partial", chunk_digests(head))


def test_a_short_transfer_with_pieces_is_refused(tmp_path: Path, path_taken: str) -> None:
    head = tmp_path / "head.gguf"
    head.write_bytes(os.urandom(VERIFY_CHUNK + 10))
    short = tmp_path / "short.gguf"
    short.write_bytes(head.read_bytes()[:VERIFY_CHUNK])
    with pytest.raises(StoreError, match=f"got {VERIFY_CHUNK} bytes of {VERIFY_CHUNK + 10}"):
        receive_checked(offer(short), VERIFY_CHUNK + 10, tmp_path / "w.partial", chunk_digests(head))


def test_a_peer_that_goes_silent_is_refused_not_waited_on_for_ever(tmp_path: Path, path_taken: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "TIMEOUT", 0.5)
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()  # accepts, sends nothing
    o = {"host": "127.0.0.1", "port": server.getsockname()[1], "token": (b"t" * 16).hex()}
    try:
        with pytest.raises((StoreError, TimeoutError)):
            receive_checked(o, VERIFY_CHUNK, tmp_path / "w.partial", (hashlib.sha256(b"").hexdigest(),))
    finally:
        server.close()
        for conn in held:
            conn.close()
