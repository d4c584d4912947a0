"""`warmstart pull hf:ORG/REPO[:QUANT | /FILE]`: a GGUF from the Hugging Face Hub into the store (a model split in
shards: all of them, as one model), or, from a repository without GGUF files, its safetensors checkpoint for vLLM
(the files vLLM loads: config, tokenizer, the weights the index names).

The download is huggingface_hub's own (resumable, into its cache, `HF_TOKEN` for gated repositories,
`HF_ENDPOINT` for a mirror, its progress bar); warmstart then hashes the file and records it in the store
with its source (repository, commit, file), so `path = "store:NAME"` serves it and every start is checked
against that digest."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.errors import StoreError
from warmstart.store.files import SHARD
from warmstart.store.manifest import Manifest, ManifestStore

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
INDEX = "model.safetensors.index.json"
_WEIGHTS_FILE = re.compile(r"^[^/\\.][^/\\]*\.safetensors$")  # a weights file at the top level
# what vLLM (transformers) reads from a checkpoint folder besides its weights
_CHECKPOINT_FILES = re.compile(
    r"^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|preprocessor_config|"
    r"chat_template)\.json$|^(tokenizer\.model|vocab\.json|vocab\.txt|merges\.txt|chat_template\.jinja)$")


@dataclass(frozen=True)
class HubRef:
    repo: str
    selector: str | None  # a file in the repository, or a part of its name such as a quant type (Q4_K_M)

    @property
    def default_name(self) -> str:
        """The repository's name (less a -GGUF suffix), and the quant or file chosen: smollm2-135m-q4_k_m (a shard
        of a split model by its model's name, less the part number)."""
        base = re.sub(r"-gguf$", "", self.repo.split("/")[1], flags=re.I)
        if self.selector:
            chosen = Path(self.selector).name
            shard = SHARD.match(chosen)
            base += "-" + (shard.group("model") if shard else chosen.removesuffix(".gguf"))
        return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-.")


def parse_ref(ref: str) -> HubRef:
    """`hf:ORG/REPO`, `hf:ORG/REPO:Q4_K_M` (a quant name or file pattern) or `hf:ORG/REPO/path/file.gguf`."""
    if not ref.startswith("hf:"):
        raise StoreError(f"{ref!r} is not a Hub reference: write hf:ORG/REPO, hf:ORG/REPO:Q4_K_M or "
                         "hf:ORG/REPO/FILE.gguf")
    rest = ref[3:]
    selector: str | None = None
    if ":" in rest:
        rest, selector = rest.split(":", 1)
    parts = rest.split("/")
    repo = "/".join(parts[:2])
    if len(parts) > 2:
        selector = "/".join(parts[2:])
    if not _REPO.match(repo) or selector == "":
        raise StoreError(f"{ref!r} is not a Hub reference: write hf:ORG/REPO, hf:ORG/REPO:Q4_K_M or "
                         "hf:ORG/REPO/FILE.gguf")
    return HubRef(repo, selector)


def choose_files(files: list[str], ref: HubRef) -> list[str]:
    """The GGUF the reference names: a file of that path, else the one whose name contains the selector (case
    ignored); without a selector, the only GGUF. A model split in shards (NAME-00001-of-00003.gguf, as
    llama.cpp's gguf-split writes it) is all its shards, in order. The error lists the choices when it is not
    one model."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if not ggufs:
        raise StoreError(f"{ref.repo} has no GGUF file, nor a safetensors checkpoint (config.json and *.safetensors) "
                         f"for vLLM (files: {', '.join(sorted(files)[:10]) or 'none'})")
    if ref.selector is None:
        if len(one := _one_model(ggufs, ggufs)) > 0:
            return one
        raise StoreError(f"{ref.repo} has {len(ggufs)} GGUF files; name one, e.g. hf:{ref.repo}:Q4_K_M "
                         f"(files: {', '.join(ggufs)})")
    if ref.selector in ggufs:
        return _one_model([ref.selector], ggufs) or [ref.selector]
    matches = [f for f in ggufs if ref.selector.lower() in Path(f).name.lower()]
    if len(one := _one_model(matches, ggufs)) > 0:
        return one
    which = "none" if not matches else f"{len(matches)}: {', '.join(matches)}"
    raise StoreError(f"'{ref.selector}' matches {which} of {ref.repo}'s GGUF files ({', '.join(ggufs)})")


def is_checkpoint(files: list[str]) -> bool:
    """A repository without GGUF files that holds a Hugging Face checkpoint: a config.json and safetensors weights
    at its top level."""
    return (not any(f.lower().endswith(".gguf") for f in files) and "config.json" in files
            and any(_WEIGHTS_FILE.match(f) for f in files))


def checkpoint_files(files: list[str], repo: str, index: Any) -> list[str]:
    """The files of a checkpoint repository vLLM loads: config and tokenizer files, and the weights: those its
    index (`index`: model.safetensors.index.json as read, None when there is none) names, or without one every
    safetensors file at the top level. Other weights the repository holds (a consolidated copy, other formats,
    subfolders) are left."""
    meta = [f for f in files if _CHECKPOINT_FILES.match(f)]
    if index is None:
        return sorted(meta) + sorted(f for f in files if _WEIGHTS_FILE.match(f))
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise StoreError(f"{repo}: {INDEX} has no weight_map")
    weights = sorted({str(v) for v in weight_map.values()})
    odd = [w for w in weights if not _WEIGHTS_FILE.match(w)]
    if odd:  # the folder vLLM is given holds files by their names: nothing in another folder, nothing else
        raise StoreError(f"{repo}: {INDEX} names {odd[0]!r}, not a safetensors file beside it")
    missing = [w for w in weights if w not in files]
    if missing:
        raise StoreError(f"{repo}: {', '.join(missing[:5])} named by {INDEX} but not in the repository")
    return sorted(meta) + [INDEX] + weights


def _one_model(chosen: list[str], ggufs: list[str]) -> list[str]:
    """`chosen` as one model's files: a lone file, or shards of one split model (then all of its shards, which
    must all be in the repository); [] when it is several models."""
    shards = {(m.group("model"), m.group("parts")) for f in chosen if (m := SHARD.match(f))}
    if len(shards) == 1 and all(SHARD.match(f) for f in chosen):
        (model, parts), = shards
        names = [f"{model}-{i:05d}-of-{parts}.gguf" for i in range(1, int(parts) + 1)]
        present = {f.lower(): f for f in ggufs}
        missing = [n for n in names if n.lower() not in present]
        if missing:
            raise StoreError(f"{', '.join(missing)}: parts of the split model {Path(model).name} missing from "
                             "the repository")
        return [present[n.lower()] for n in names]
    return chosen if len(chosen) == 1 else []


def pull(ref_text: str, store: ManifestStore, *, name: str | None = None, revision: str | None = None,
         replace: bool = False) -> Manifest:
    """Download the referenced GGUF, or a repository's safetensors checkpoint (huggingface_hub: resumable,
    cached), and add it to the store."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise StoreError("pulling from the Hub needs huggingface_hub: run ./install.sh") from None
    ref = parse_ref(ref_text)
    try:
        api = HfApi()
        info = api.model_info(ref.repo, revision=revision, files_metadata=False)
        files = [s.rfilename for s in info.siblings or []]
        commit = info.sha or revision or "main"
        fetched: dict[str, Path] = {}  # downloaded already (a checkpoint's index, read to choose its weights)
        engine = "vllm" if is_checkpoint(files) else "llamacpp"
        if engine == "vllm":
            if ref.selector is not None:
                raise StoreError(f"{ref.repo} has no GGUF file: it is a safetensors checkpoint (for vLLM), pulled "
                                 f"whole, without a selector: hf:{ref.repo}")
            index = None
            if INDEX in files:
                index_path = fetched[INDEX] = Path(hf_hub_download(ref.repo, INDEX, revision=commit))
                try:
                    index = json.loads(index_path.read_text())
                except (ValueError, UnicodeDecodeError) as exc:
                    raise StoreError(f"{ref.repo}: {INDEX} is not JSON ({exc})") from None
            chosen = checkpoint_files(files, ref.repo, index)
        else:
            chosen = choose_files(files, ref)
        local = [fetched.get(filename) or Path(hf_hub_download(ref.repo, filename, revision=commit))
                 for filename in chosen]
    except GatedRepoError:
        raise StoreError(f"{ref.repo} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise StoreError(f"no repository {ref.repo} on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise StoreError(f"{ref.repo} has no revision {revision!r}") from None
    except EntryNotFoundError as exc:
        raise StoreError(f"{ref.repo}: {exc}") from None
    except HfHubHTTPError as exc:
        raise StoreError(f"the Hub refused: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise StoreError(f"cannot reach the Hub ({exc}); check the network, or HF_ENDPOINT for a mirror") from None
    name = name or ref.default_name
    if engine == "vllm":
        source = f"hf:{ref.repo}@{commit} ({len(chosen)} files)"
    else:
        source = f"hf:{ref.repo}@{commit}/{chosen[0]}" + (f" (+{len(chosen) - 1} parts)" if len(chosen) > 1 else "")
    if len(local) == 1 and engine == "llamacpp":
        # the snapshot's path (a link into the cache's blobs) keeps the file's name, which says it is a GGUF
        return store.add(local[0], name=name, engine=engine, source=source, replace_existing=replace)
    # a split model or a checkpoint: a folder of its files alone (the snapshot may hold other files of the
    # repository), each a link to the cache's copy under its own name; llama.cpp is given a split model's first
    # part and finds the others beside it, vLLM the folder
    store.may_add(name, replace)  # before the folder is made under that name
    folder = store.root / "hub" / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in local:
        (folder / path.name).symlink_to(path)
    return store.add(folder, name=name, engine=engine, source=source, replace_existing=replace)
