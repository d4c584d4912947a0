"""The folder for an engine's Unix sockets: the preferred one when a socket's path fits, else a short private one."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from warmstart.engines.ipc import SUN_PATH_MAX, UUID_NAME, release_socket_dir, socket_dir
from warmstart.errors import EngineError


def _hash(preferred: Path) -> str:
    return hashlib.sha256(os.fsencode(preferred)).hexdigest()[:12]


def test_a_short_folder_is_kept_a_deep_one_gets_a_short_private_one_that_fits_a_socket(tmp_path):
    assert socket_dir(tmp_path) == tmp_path
    deep, other = (tmp_path / (c * 80) / "vllm" / "tmp" for c in "de")
    assert len(os.fsencode(deep)) + UUID_NAME > SUN_PATH_MAX
    made = [socket_dir(deep), socket_dir(other)]
    try:
        short = made[0]
        assert short != deep and short.is_dir() and (short.stat().st_mode & 0o777) == 0o700
        assert len(os.fsencode(short / str(uuid.uuid4()))) <= SUN_PATH_MAX
        assert socket_dir(deep) == short and made[1] != short  # one per data directory
        short.chmod(0o777)  # others could put their sockets in it: refused, saying what to do
        with pytest.raises(EngineError, match="not a private folder of this user; remove it"):
            socket_dir(deep)
    finally:
        for folder in made:
            folder.rmdir()


def test_the_short_folder_is_removed_when_released_empty_and_kept_while_anything_is_in_it(tmp_path):
    deep = tmp_path / ("d" * 80) / "vllm" / "tmp"
    short = socket_dir(deep)
    try:
        (short / "socket").write_text("")
        release_socket_dir(deep, short)  # a socket still in it: kept
        assert short.is_dir()
        (short / "socket").unlink()
        release_socket_dir(deep, short)
        assert not short.exists()
        release_socket_dir(deep, short)  # gone already: nothing to do
    finally:
        if short.exists():
            for f in short.iterdir():
                f.unlink()
            short.rmdir()
    tmp_path.joinpath("keep").mkdir()
    release_socket_dir(tmp_path / "keep", tmp_path / "keep")  # the preferred folder itself is never removed
    assert (tmp_path / "keep").is_dir()


async def test_a_vllm_engine_under_a_deep_data_directory_leaves_no_folder_behind_once_closed(tmp_path):
    """Its socket folder is made once it has vLLM models (at open, or when a reload brings the first), and removed
    when it closes; a server without vLLM models makes none (a killed one would leave it in /tmp)."""
    from tests.support import config_text
    from warmstart.config_loader import load_config
    from warmstart.engines.vllm import VllmEngine

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "warmstart.toml").write_text(config_text([
        {"name": "tiny", "engine": "vllm", "path": str(model_dir), "options": {"runtimes": 0}}]))
    [model] = load_config(tmp_path / "warmstart.toml", env={}, flags={"server.data_dir": str(tmp_path)}).models
    for at_open in (True, False):
        engine = VllmEngine(tmp_path / ("d" * 80) / str(at_open), (model,) if at_open else ())
        short = tmp_path / "unused"
        try:
            await engine.open()
            if not at_open:
                assert engine._sockets is None and not list(Path(tempfile.gettempdir()).glob(
                    f"warmstart-{os.getuid()}-{_hash(engine.root / 'tmp')}"))
                engine.models_changed([model])  # a reload brings its first vLLM model
            short = socket_dir(engine.root / "tmp")
            assert short != engine.root / "tmp" and short.is_dir() and engine._sockets == short
        finally:
            await engine.close()
        assert not short.exists()


def test_sockets_no_process_listens_on_are_removed_with_the_folder_and_live_ones_kept(tmp_path):
    deep = tmp_path / ("d" * 80) / "vllm" / "tmp"
    short = socket_dir(deep)
    live, stale = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        live.bind(str(short / "live"))
        live.listen()
        stale.bind(str(short / "stale"))
        stale.close()  # its file stays, as an engine killed or closed without unlinking leaves it
        assert (short / "stale").exists()
        release_socket_dir(deep, short)
        assert not (short / "stale").exists() and (short / "live").exists() and short.is_dir()
        live.close()
        release_socket_dir(deep, short)
        assert not short.exists()
    finally:
        live.close()
        if short.exists():
            for f in short.iterdir():
                f.unlink()
            short.rmdir()
