"""Synthetic corpora at a requested diversity level.

The Python API (functions in `generator.api`, records in `generator.results`):

    plan = generator.load_recipe("recipes/quickstart.yaml", ["size.num_docs=50"])
    result = generator.run(plan, "runs/quickstart")             # -> RunResult
    report = generator.score("runs/quickstart")                 # -> DiversityReport
"""
import importlib

for _package in ("generator.run", "generator.export"):  # a subpackage's first import binds its name in
    importlib.import_module(_package)  # this module: loaded first, the functions `run` and `export` win

from generator.api import (calibrate, compare, export, load_recipe, render, run, score, verify,  # noqa: E402
                           write_card)
from generator.errors import UserError  # noqa: E402
from generator.results import (Coverage, DiversityReport, Endings, ExportResult, Progress,  # noqa: E402
                               Prompt, Proxy, Ruler, RunResult, SourceWeight, TargetOutcome, VerifyResult)

__all__ = [
    "load_recipe", "render", "run", "score", "compare", "calibrate", "export", "verify", "write_card",
    "Plan", "Progress", "RunResult", "Coverage", "Endings", "TargetOutcome", "Ruler", "DiversityReport",
    "Proxy", "Prompt", "ExportResult", "SourceWeight", "VerifyResult", "UserError",
]


def __getattr__(name: str):
    if name == "Plan":  # a loaded recipe; its module loads jinja2 and pyarrow, so only when asked for
        from generator.recipe import Plan
        return Plan
    raise AttributeError(f"module 'generator' has no attribute {name!r}")
