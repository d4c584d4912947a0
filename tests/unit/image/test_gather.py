"""Which wheels go into an image's build context: those the install resolves, not all the cache holds."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from warmstart.image import build


def _wheel(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
    return path


def test_only_the_resolved_wheels_go_into_the_context_and_new_ones_are_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    store = cache / "wheels"
    own = _wheel(store / "warmstart" / "warmstart-0.1.0-py3-none-any.whl")
    _wheel(store / "cached-2.0-py3-none-any.whl")  # a dependency already in the cache
    _wheel(store / "pip-26.3-py3-none-any.whl")
    _wheel(store / "unrelated-9.9-py3-none-any.whl")  # an older build's: not a dependency now
    monkeypatch.setattr(build, "own_wheel", lambda _store: own)

    def pip(args: list[str]) -> None:  # what `pip wheel` saves: the wheel given, its dependencies, pip
        target = Path(args[args.index("--wheel-dir") + 1])
        shutil.copy2(own, target / own.name)
        shutil.copy2(store / "cached-2.0-py3-none-any.whl", target)
        shutil.copy2(store / "pip-26.3-py3-none-any.whl", target)
        _wheel(target / "fresh-1.0-py3-none-any.whl")  # downloaded from the index

    monkeypatch.setattr(build, "_pip", pip)
    wheels = tmp_path / "context" / "wheels"
    pip_name, requirements = build.gather_wheels(wheels, cache, ("xllamacpp",))
    assert sorted(p.name for p in wheels.iterdir()) == [
        "cached-2.0-py3-none-any.whl", "fresh-1.0-py3-none-any.whl", "pip-26.3-py3-none-any.whl",
        "warmstart-0.1.0-py3-none-any.whl"]
    assert (store / "fresh-1.0-py3-none-any.whl").is_file()  # kept for the next build
    assert (pip_name, requirements) == ("pip-26.3-py3-none-any.whl", ("warmstart", "xllamacpp"))
