"""The body length a request declares, as the three places that bound a body read it (gateway/limits.py)."""

from warmstart.gateway.limits import declared_length


def scope(*lengths: bytes) -> dict:
    return {"headers": [(b"host", b"x"), *((b"content-length", v) for v in lengths)]}


def test_the_declared_length_is_none_without_one_the_largest_of_several_and_minus_one_for_a_bad_one():
    assert declared_length(scope()) is None
    assert declared_length(scope(b"0")) == 0 and declared_length(scope(b"12")) == 12
    assert declared_length(scope(b"12", b"4096")) == 4096  # a smuggled second length cannot slip under a bound
    for bad in ((b"-1",), (b"1e3",), (b"+12",), (b"12", b"x"), (b"x", b"12")):
        assert declared_length(scope(*bad)) == -1, bad
