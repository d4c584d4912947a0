import hashlib
import json
import os
import time

from warmstart.store.digest import DigestCache, hash_stable


def test_digest_is_cached_by_stat_and_survives_restart(tmp_path):
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


def flip_a_byte_and_put_the_mtime_back(f, offset: int = 1) -> None:
    st = f.stat()
    with f.open("r+b") as fh:  # same size, same inode
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_a_byte_flip_with_the_mtime_put_back_is_hashed_again(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(1 << 16))
    cache = DigestCache(tmp_path / "d.json")
    before = cache.digest(f)
    flip_a_byte_and_put_the_mtime_back(f)
    after = DigestCache(tmp_path / "d.json").digest(f)  # a restart too: the cache file keys on ctime
    assert not after.cached and after.sha256 == hashlib.sha256(f.read_bytes()).hexdigest() != before.sha256
    assert after.stat.ctime_ns > before.stat.ctime_ns


def test_a_digest_holds_for_a_stat_older_than_a_timestamp_tick(tmp_path):
    # a change within the same coarse timestamp tick as the last one could keep its ctime, so a file
    # changed just now is read again once that tick has passed: its stat then tells any later change apart
    f = tmp_path / "w.bin"
    f.write_bytes(b"fresh")
    value, st = hash_stable(f)
    assert value == hashlib.sha256(b"fresh").hexdigest() and st.ctime_ns == f.stat().st_ctime_ns
    assert st.ctime_ns <= time.time_ns()


def test_a_cache_of_the_earlier_format_costs_one_rehash(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    st = f.stat()
    (tmp_path / "d.json").write_text(json.dumps(  # keyed without ctime: a stale digest must not be trusted
        {f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}": "00" * 32}))
    cache = DigestCache(tmp_path / "d.json")
    d = cache.digest(f)
    assert not d.cached and d.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert DigestCache(tmp_path / "d.json").digest(f).cached


def test_a_digest_remembered_for_a_checked_copy_is_used_until_the_file_changes(tmp_path):
    # a peer fetch checked every piece as it wrote the file: its first use need not read it again
    f = tmp_path / "w.bin"
    f.write_bytes(b"fetched")
    cache = DigestCache(tmp_path / "d.json")
    cache.remember({f: hashlib.sha256(b"fetched").hexdigest()})
    got = cache.digest(f)
    assert got.cached and got.sha256 == hashlib.sha256(b"fetched").hexdigest() and cache.hashed == 0
    f.write_bytes(b"changed")  # a later write moves ctime: read again
    again = cache.digest(f)
    assert not again.cached and again.sha256 == hashlib.sha256(b"changed").hexdigest()
