import hashlib
import os

from warmstart.store.digest import DigestCache


def test_digest_is_cached_by_path_size_mtime_inode_and_survives_restart(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    cache_file = tmp_path / "digests.json"
    cache = DigestCache(cache_file)
    first = cache.digest(f)
    assert first.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest() and not first.cached
    assert cache.digest(f).cached and cache.hashed == 1
    again = DigestCache(cache_file)  # a restart reads the cache file
    assert again.digest(f).cached and again.hashed == 0


def test_changed_file_is_rehashed(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    cache = DigestCache(tmp_path / "d.json")
    one = cache.digest(f).sha256
    f.write_bytes(b"two!")
    os.utime(f, ns=(1, 1))
    two = cache.digest(f)
    assert not two.cached and two.sha256 != one and two.sha256 == hashlib.sha256(b"two!").hexdigest()


def test_force_rehashes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    cache = DigestCache(None)
    cache.digest(f)
    assert not cache.digest(f, force=True).cached and cache.hashed == 2
