"""The embedded model's cache folder: converted once, also when several processes ask at once."""
from __future__ import annotations

import json
import multiprocessing
import time

from generator.backends import models


def fake_convert(gguf, target):
    """Stands in for the GGUF conversion: slow enough for a second process to arrive meanwhile;
    each call leaves a line in the cache folder."""
    with open(target.parent / "conversions.log", "a") as log:
        log.write(f"{gguf}\n")
    time.sleep(1.0)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"weights")
    files = {"model.safetensors": models.file_sha256(target / "model.safetensors")}
    (target / "generator-manifest.json").write_text(json.dumps({"files": files}))


def resolve_in_child(queue) -> None:
    queue.put(models.resolve_model("embedded:smollm2-135m"))


def test_processes_that_need_the_model_at_once_convert_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GENERATOR_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    monkeypatch.setattr(models, "_find_packaged_file", lambda package, filename: filename)
    context = multiprocessing.get_context("fork")  # the children keep the stand-in converter
    queue = context.Queue()
    children = [context.Process(target=resolve_in_child, args=(queue,)) for _ in range(3)]
    for child in children:
        child.start()
    answers = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    target = tmp_path / "models" / "smollm2-135m-instruct"
    assert answers == [str(target)] * 3
    conversions = (tmp_path / "models" / "conversions.log").read_text().splitlines()
    assert conversions == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert models.is_prepared("embedded:smollm2-135m")


def test_a_cached_file_changed_after_its_check_is_caught(tmp_path, monkeypatch):
    """A file is hashed once per process, and again when its size or time changes: the model
    checked as complete, then damaged in place, is no longer prepared."""
    monkeypatch.setenv("GENERATOR_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    fake_convert("model.gguf", tmp_path / "models" / "smollm2-135m-instruct")
    assert models.is_prepared("embedded:smollm2-135m")
    weights = tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors"
    time.sleep(0.01)
    weights.write_bytes(b"weighs")  # same length, other bytes
    assert not models.is_prepared("embedded:smollm2-135m")


def test_a_conversion_parses_the_gguf_once_and_puts_gguf_back_after():
    """Inside `_gguf_read_once` the real packaged GGUF is parsed once however often it is
    opened and the tensor-name table is built once; afterwards gguf's own names are back.
    (That the converted files are byte for byte those of the plain conversion was checked by
    converting both ways: BENCHMARKS.md, "The embedded model's conversion".)"""
    import gguf

    path = models._find_packaged_file(*models.EMBEDDED["embedded:smollm2-135m"][:2])
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with models._gguf_read_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and isinstance(first, reader_class)
        arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == "llama")
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader_class, name_map)
    assert gguf.get_tensor_name_map(arch, 30) is not gguf.get_tensor_name_map(arch, 30)


def test_dtype_auto_on_cpu_is_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    from generator.backends.vllm import cpu_dtype, cpu_flags, engine_options
    # engine_options sets these in os.environ; recorded here, whatever it sets is undone afterwards
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert cpu_dtype(frozenset({"avx512f", "avx512_bf16"})) == "bfloat16"
    assert cpu_dtype(frozenset({"avx512f", "amx_bf16", "amx_tile"})) == "bfloat16"
    assert cpu_dtype(frozenset({"avx512f", "avx2"})) == "float32"
    assert cpu_dtype(frozenset()) == "float32"
    _, options = engine_options("/models/any")  # a path: nothing to convert
    assert options["dtype"] == cpu_dtype(cpu_flags())  # this machine's own choice
    assert engine_options("/models/any", dtype="float32")[1]["dtype"] == "float32"
