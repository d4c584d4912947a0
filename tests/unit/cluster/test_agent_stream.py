"""The agents' direct stream (warmstart.cluster.chunks): a one-shot TCP offer of a model's files, one after the
other on one connection, each read and checked as it arrives. Real sockets on loopback; no Ray (the offer is
made the way the agent makes it)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from warmstart.cluster import chunks
from warmstart.cluster.chunks import (
    VERIFY_CHUNK,
    chunk_digests,
    receive_checked,
    receive_files,
    serve_file,
    serve_files,
)
from warmstart.cluster.weights import ONE_FILE, WeightFile
from warmstart.errors import IntegrityError, StoreError


@pytest.fixture(params=["splice", "buffered"])
def path_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The pieces are received by splice into the file (Linux) or through a buffer (where there is no splice)."""
    if request.param == "buffered":
        monkeypatch.delattr(os, "splice", raising=False)
    elif not hasattr(os, "splice"):
        pytest.skip("no os.splice here")
    return str(request.param)


def offer(path: Path | list[Path], token: bytes = b"t" * 16) -> dict:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    if isinstance(path, list):
        threading.Thread(target=serve_files, args=(server, token, path), daemon=True).start()
    else:
        threading.Thread(target=serve_file, args=(server, token, path), daemon=True).start()
    return {"host": "127.0.0.1", "port": server.getsockname()[1], "token": token.hex()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_hashed_whole_arrives_with_its_sha256_and_another_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(os.urandom(20 << 20) + b"tail")  # more than one buffer, not a multiple of one
    size = src.stat().st_size
    receive_files(offer(src), [(WeightFile(ONE_FILE, size, sha(src.read_bytes())), tmp_path / "w.partial")])
    assert (tmp_path / "w.partial").read_bytes() == src.read_bytes()
    with pytest.raises(IntegrityError, match="is not the manifest's"):
        receive_files(offer(src), [(WeightFile(ONE_FILE, size, sha(b"other")), tmp_path / "w.partial")])


def test_a_short_transfer_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(StoreError, match="got 1000 bytes of 2000"):
        receive_files(offer(src), [(WeightFile(ONE_FILE, 2000, sha(b"x" * 2000)), tmp_path / "w.partial")])


def test_a_peer_without_the_token_gets_nothing(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(b"secret weights")
    o = offer(src, token=b"a" * 16)
    o["token"] = (b"b" * 16).hex()
    with pytest.raises(StoreError, match="got 0 bytes of 14"):
        receive_files(o, [(WeightFile(ONE_FILE, 14, sha(b"secret weights")), tmp_path / "w.partial")])


@pytest.mark.parametrize("pieces", [True, False], ids=["pieces", "whole"])
def test_a_folders_files_arrive_one_after_the_other_on_one_connection(tmp_path: Path, path_taken: str,
                                                                       pieces: bool) -> None:
    # sizes that end mid-buffer and mid-piece: each file must stop exactly at its own end on the shared stream
    contents = {"config.json": b"{}", "empty": b"", "model-00001.safetensors": os.urandom(VERIFY_CHUNK + 5),
                "sub/model-00002.safetensors": os.urandom(3 * 1000 * 1000 + 1), "tokenizer.json": b"t" * 777}
    src = tmp_path / "src"
    for rel, data in contents.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    files = [WeightFile(rel, len(data), sha(data), chunk_digests(src / rel) if pieces else None)
             for rel, data in contents.items()]
    landed: list[str] = []
    receive_files(offer([src / rel for rel in contents]), [(f, f.under(tmp_path / "copy")) for f in files],
                  landed=lambda f: landed.append(f.path))
    assert landed == list(contents)
    for rel, data in contents.items():
        assert (tmp_path / "copy" / rel).read_bytes() == data


def test_a_bad_file_in_a_folder_is_named_and_those_before_it_are_kept(tmp_path: Path, path_taken: str) -> None:
    good = {"a.safetensors": os.urandom(1 << 20), "b.safetensors": os.urandom(VERIFY_CHUNK + 1), "c.json": b"{}"}
    src = tmp_path / "src"
    src.mkdir()
    for rel, data in good.items():
        (src / rel).write_bytes(data)
    files = [WeightFile(rel, len(data), sha(data), chunk_digests(src / rel)) for rel, data in good.items()]
    bad = bytearray(good["b.safetensors"])
    bad[VERIFY_CHUNK] ^= 1  # the last byte's piece, one bit
    (src / "b.safetensors").write_bytes(bad)
    landed: list[str] = []
    with pytest.raises(IntegrityError, match=r"b\.safetensors: piece 1 \(bytes 16777216-16777217\) has another sha256"):
        receive_files(offer([src / rel for rel in good]), [(f, f.under(tmp_path / "copy")) for f in files],
                      landed=lambda f: landed.append(f.path))
    assert landed == ["a.safetensors"]


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


def test_a_disk_without_room_for_a_file_refuses_it_before_its_bytes_arrive(tmp_path: Path, path_taken: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    src = tmp_path / "w.gguf"
    src.write_bytes(os.urandom(VERIFY_CHUNK + 1))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StoreError, match=f"no room for {VERIFY_CHUNK + 1} bytes at {tmp_path}"):
        receive_checked(offer(src), VERIFY_CHUNK + 1, tmp_path / "w.partial", chunk_digests(src))
