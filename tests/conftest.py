from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # test data shared by every folder of tests/
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def root() -> Path:
    return ROOT


def write_recipe(tmp_path: Path, body: str, name: str = "recipe.yaml") -> Path:
    """A recipe in tmp_path that points at the repository's grids and templates."""
    path = tmp_path / name
    path.write_text(body.replace("@ROOT@", str(ROOT)))
    return path


ECHO_TEMPLATE = "{# variables: [topic, persona] #}{{ topic }}\nas told by {{ persona }}"


def echo_recipe(tmp_path: Path, name: str, seed: int, size: str, target: str, extra: str = "") -> Path:
    """A steered recipe over the repository's topics x personas whose template echoes the topic on
    its first line (EchoBackend returns the prompt, so a judge can group documents by it);
    `size` and `target` are the YAML flow mappings of those sections, `extra` more top-level lines."""
    (tmp_path / "echo.j2").write_text(ECHO_TEMPLATE)
    return write_recipe(tmp_path, f"""
name: {name}
seed: {seed}
roots: [@ROOT@, {tmp_path}]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
templates:
  - path: {tmp_path}/echo.j2
size: {size}
target: {target}
scoring: {{enabled: false}}
{extra}""", name=f"{name}.yaml")


SMALL_RECIPE = """
name: small
seed: 3
roots: [@ROOT@]
grid:
  topic: @ROOT@/topics/topics.yaml
  persona: @ROOT@/topics/personas.yaml
  style: @ROOT@/topics/styles.yaml
  audience: @ROOT@/topics/audiences.yaml
templates:
  - path: @ROOT@/prompts/topic_style_persona.j2
  - path: @ROOT@/prompts/textbook.j2
size: {num_docs: 20, shard_rows: 8}
sampling: {temperature: 0.7, top_p: 0.9, max_tokens: 32}
engine: {backend: ray}
scoring: {enabled: false}
"""


@pytest.fixture
def small_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path, SMALL_RECIPE)


@pytest.fixture(scope="session")
def ray_engine():
    """One real engine for the whole session: vLLM's CPU build with the embedded model, inside
    a local Ray actor. Shared by every integration test. In float32 on every CPU, so that a
    request's text does not depend on what it is batched with (bench/bench_batch_invariance.py);
    the tests that start engines of their own (the CLI's, the server's) take `dtype: auto`."""
    from generator.backends import open_backend
    import ray

    backend = open_backend("ray", "embedded:smollm2-135m", num_replicas=1, max_model_len=1024,
                           dtype="float32")
    yield backend
    backend.close()
    ray.shutdown()


def pytest_addoption(parser):
    parser.addoption("--order", default="file", choices=("file", "reverse", "random"),
                     help="run tests in file order, reversed, or shuffled (see --order-seed)")
    parser.addoption("--order-seed", type=int, default=0, help="seed of --order random")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The suite must not depend on test order or on what an earlier test left in the cache."""
    order = config.getoption("--order")
    if order == "reverse":
        items.reverse()
    elif order == "random":
        import numpy as np
        perm = np.random.default_rng(config.getoption("--order-seed")).permutation(len(items))
        items[:] = [items[i] for i in perm]
    _engine_tests_first_on_one_worker(items)


def _engine_tests_first_on_one_worker(items):
    """Under `-n 2 --dist loadgroup` (`make test`) the integration tests come first, as one group
    on one worker: one test at a time, so at most one engine runs on the two cores (a vLLM CPU
    engine binds its OpenMP threads to both), and the tests on the session's engine start it
    once. The other worker takes unit tests meanwhile; what is left of them is shared by both
    workers afterwards."""
    engine = [item for item in items if item.get_closest_marker("integration")]
    for item in engine:
        item.add_marker(pytest.mark.xdist_group("engine"))
    items[:] = engine + [item for item in items if not item.get_closest_marker("integration")]
