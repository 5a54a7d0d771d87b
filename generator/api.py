"""The Python API: load a recipe, render its prompts, run it, score corpora, export, verify.

Every function returns frozen records (generator.results) and prints nothing: progress goes
to an `on_progress` callback, notes to stdlib `logging` (logger names under "generator").
User errors raise `generator.errors.UserError` (what, and how to fix it) before heavy work.
Heavy packages (vLLM, Ray, torch) are imported inside the functions that need them.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Union

from generator.errors import UserError
from generator.results import (DiversityReport, ExportResult, Progress, Prompt, Ruler, RunResult,
                               SourceWeight, VerifyResult, progress_of, run_result)

if TYPE_CHECKING:
    from generator.recipe import Plan

log = logging.getLogger(__name__)

OnProgress = Callable[[Progress], None]
Corpus = Union[str, Path, Sequence[str]]  # a Parquet file/folder, JSONL file, saved HF dataset, or the texts


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *,
                resume_from: str | Path | None = None) -> Plan:
    """Read, check and load a YAML recipe with `KEY=VALUE` overrides (dotted for nested keys):
    its grid and templates loaded and every template rendered once. UserError when anything is off.
    `resume_from`: the run folder a resume will continue; a rewrite run's source is then not read
    whole again when the folder recorded its count."""
    from generator.recipe import load_recipe as load
    return load(path, list(overrides), resume_from=Path(resume_from) if resume_from is not None else None)


def _as_plan(recipe: Plan | str | Path) -> Plan:
    return load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe


def render(recipe: Plan | str | Path, n: int = 5, *, start: int = 0) -> tuple[Prompt, ...]:
    """Samples `start`..`start+n-1` of the recipe, as the run would draw them (no model needed)."""
    from generator.sampling.requests import plan_samples
    if n < 0 or start < 0:
        raise UserError(f"render: n={n}, start={start}: must be >= 0", fix="e.g. render(recipe, 5)")
    plan = _as_plan(recipe)
    return tuple(Prompt(index=s.index, template=s.template, id=s.request.id, cell=tuple(s.values.items()),
                        system=s.request.system, prompt=s.request.prompt)
                 for s in plan_samples(plan, start, n))


def run(recipe: Plan | str | Path, out: str | Path, *, backend=None, judge=None, resume: bool = False,
        force: bool = False, score: bool = True, card: bool = True,
        on_progress: OnProgress | None = None) -> RunResult:
    """Generate the recipe's corpus into `out` (Parquet shards under data/, summary.json), steering to
    its target if it has one; then score it (`score`, when the recipe's scoring is enabled) and write
    its dataset card (`card`). `backend`: any object of the generation protocol
    (generator.records.Backend), left open; default: the recipe's engine, opened and closed here.
    `judge`: the judge steering measures with, any object with `cluster(batches)` (default: the target's).
    `resume` continues a killed run, `force` overwrites a non-empty `out`. A run that stops early
    returns a RunResult whose `stopped` says why."""
    from generator.quality.scored import with_score_gate
    from generator.quality.scores import open_score_gate
    from generator.recipe import pilot_size
    from generator.run import controller

    plan, out = _as_plan(recipe), Path(out)
    report = on_progress or (lambda progress: None)
    check_run(plan, out, resume=resume, force=force, score=score, engine=backend is None)
    gate = open_score_gate(plan.recipe.quality, out)  # its judge opens (or fails) before the engine
    report(Progress("start", total=plan.recipe.size.num_docs))
    owned = backend is None
    totals = {"num_docs": plan.recipe.size.num_docs, "pilot_docs": pilot_size(plan.recipe)}
    try:
        if owned:
            backend = open_engine(plan, report)
        summary = controller.run(plan, out, with_score_gate(backend, plan, gate), resume=resume, force=force,
                                 judge=judge,
                                 on_progress=lambda state, flow: report(progress_of(state, flow, **totals)))
    except controller.RunStopped as exc:
        from generator.files import read_json
        return run_result(out, {**read_json(out / "summary.json"), "stopped": str(exc)})
    finally:
        if owned and backend is not None:
            backend.close()
        if gate is not None:
            gate.close()
    diversity = None
    if score and plan.recipe.scoring.enabled:
        from generator.measure.report import score_finished_run
        report(Progress("score"))
        diversity = DiversityReport.from_dict(score_finished_run(plan, out), str(out))
    card_path = None
    if card:
        from generator.export.card import write_card
        report(Progress("card"))
        card_path = write_card(out)
    return run_result(out, summary, diversity=diversity, card=card_path)


def check_run(plan: Plan, out: Path, *, resume: bool, force: bool, score: bool, engine: bool) -> None:
    """Everything `run` refuses before any engine starts: an LLM judge whose K documents do not fit
    its context, an `out` that cannot be written or resumed, an unreachable RAY_ADDRESS."""
    from generator.run.resume import check_output
    r = plan.recipe
    if "llm" in (r.scoring.enabled and score and r.scoring.judge, r.target and r.target.judge):
        from generator.judges import plan_judge
        plan_judge(r.judge)
    check_output(out, plan, resume=resume, force=force)
    if engine and r.engine.backend == "ray":
        from generator.backends.ray import check_ray_address
        check_ray_address()


def open_engine(plan: Plan, report: OnProgress):
    """The recipe's engine. Each backend converts an embedded model it needs once (RayBackend
    while its actors start), so a fresh model is one stage, "prepare", covering the engine's start."""
    from generator.backends import engine_options, open_backend
    from generator.backends.models import is_prepared
    r = plan.recipe
    fresh = r.engine.backend != "openai" and r.model.startswith("embedded:") and not is_prepared(r.model)
    report(Progress("prepare" if fresh else "engine"))
    return open_backend(r.engine.backend, r.model, **engine_options(r.engine))


def score(corpus: Corpus, *, ruler: Ruler = Ruler(), judge=None, reference: Corpus | None = None,
          proxies: bool = True, text_field: str = "text", audit: str | Path | None = None,
          judge_cache: str | Path | None = None) -> DiversityReport:
    """The diversity of one corpus under `ruler` (see `compare`)."""
    return compare([corpus], ruler=ruler, judge=judge, reference=reference, proxies=proxies,
                   text_field=text_field, audit=audit, judge_cache=judge_cache)[0]


def compare(corpora: Sequence[Corpus], *, ruler: Ruler = Ruler(), judge=None, reference: Corpus | None = None,
            proxies: bool = True, text_field: str = "text", audit: str | Path | None = None,
            judge_cache: str | Path | None = None) -> tuple[DiversityReport, ...]:
    """Score several corpora on one ruler: one judge (an LLM judge's criteria written from all of
    them together unless `ruler.criteria` exists), one K, one seed. `judge`: any object with
    `cluster(batches)` (generator.judges.protocol.Judge), left open; default: the ruler's, opened
    and closed here. `reference` adds the embedding shift from that corpus; `audit` is a JSONL of
    every judge call and batch; `judge_cache` an SQLite cache of LLM-judge answers. A damaged run
    folder and a corpus with fewer than K documents are refused before any is scored."""
    from generator.judges.audit import AuditLog
    from generator.judges.calls import CallBudget
    from generator.measure.report import score_texts

    ruler = resolved_ruler(ruler)
    check_corpora([*corpora, *([reference] if reference is not None else [])])
    names, loaded = read_corpora(corpora, text_field)
    reference_texts = read_corpora([reference], text_field)[1][0][0] if reference is not None else None
    check_sizes(names, [texts for texts, _ in loaded], ruler)
    audit_log = AuditLog(audit) if audit else None
    budget = CallBudget(ruler.max_calls)
    owned = judge is None
    try:
        if owned:
            judge = open_ruler_judge(ruler, budget=budget, audit=audit_log, cache_path=judge_cache)
        if ruler.judge == "llm" and hasattr(judge, "prepare"):
            judge.prepare([t for texts, _ in loaded for t in texts])
        results = [score_texts(texts, metadata, judge=judge, k=ruler.k, seed=ruler.seed,
                               precision=ruler.precision, num_batches=ruler.num_batches,
                               reference_texts=reference_texts, proxies=proxies, budget=budget,
                               audit=audit_log, max_failure_share=ruler.max_failure_share)
                   for texts, metadata in loaded]
        if getattr(judge, "fit", None) is not None:
            context = judge_context(judge)
            results = [{**r, "judge_context": context} for r in results]
    finally:
        if owned and hasattr(judge, "close"):
            judge.close()
        if audit_log is not None:
            audit_log.close()
    return tuple(DiversityReport.from_dict(r, name) for r, name in zip(results, names))


def resolved_ruler(ruler: Ruler) -> Ruler:
    """The ruler with its judge settings filled in and one K in both (`ruler.k` wins when set)."""
    from generator.judges.config import JudgeSettings
    from generator.judges.protocol import MAX_FAILURE_SHARE
    settings = ruler.settings or JudgeSettings()
    k = ruler.k or settings.k
    share = MAX_FAILURE_SHARE if ruler.max_failure_share is None else ruler.max_failure_share
    return dataclasses.replace(ruler, k=k, settings=dataclasses.replace(settings, k=k),
                               max_failure_share=share)


def open_ruler_judge(ruler: Ruler, kind: str | None = None, *, budget=None, audit=None, cache_path=None):
    from generator.judges import open_judge
    return open_judge(kind or ruler.judge, threshold=ruler.threshold, settings=ruler.settings,
                      criteria_path=ruler.criteria, regenerate_criteria=ruler.regenerate_criteria,
                      seed=ruler.seed, budget=budget, audit=audit, cache_path=cache_path)


def check_corpora(corpora: Sequence[Corpus]) -> None:
    """Every corpus path exists, and a run folder among them is intact (checked before any is read)."""
    from generator.run.verify import is_run_folder, require_intact
    for path in [Path(c) for c in corpora if isinstance(c, (str, Path))]:
        if not path.exists():
            raise UserError(f"corpus {path}: no such file or folder", fix="check the corpus path")
        if is_run_folder(path):
            require_intact(path, "score")


def read_corpora(corpora: Sequence[Corpus],
                 text_field: str) -> tuple[list[str], list[tuple[list[str], dict]]]:
    """(names, [(texts, metadata)]) of corpus paths or in-memory texts."""
    from generator.readers import load_corpus
    names = [str(c) if isinstance(c, (str, Path)) else "<texts>" for c in corpora]
    loaded = [load_corpus(c, text_field) if isinstance(c, (str, Path)) else (list(c), {}) for c in corpora]
    return names, loaded


def check_sizes(names: Sequence[str], corpora: Sequence[Sequence[str]], ruler: Ruler) -> None:
    """Every corpus holds K documents for a batch, checked before any is scored."""
    from generator.judges.protocol import ScoreError, check_batch_inputs
    for name, texts in zip(names, corpora):
        try:
            check_batch_inputs(len(texts), ruler.k, 1, ruler.num_batches)
        except ScoreError as exc:
            raise ScoreError(f"corpus {name}: {exc.what}", fix=exc.fix) from None


def judge_context(judge) -> dict:
    """The LLM judge's context plan as the report records it."""
    plan = judge.fit[1]
    return {"max_model_len": plan.max_model_len, "model_context": plan.model_context,
            "max_doc_tokens": judge.max_doc_tokens, "planned_doc_tokens": plan.max_doc_tokens,
            "prompt_tokens_without_documents": plan.prompt_tokens, "answer_tokens": plan.answer_tokens}


def calibrate(corpus: Corpus, *, ruler: Ruler, metric: str = "adjusted_rand", judge=None,
              text_field: str = "text"):
    """Fit the embedding judge's threshold to an LLM judge (`judge`, default: the ruler's LLM
    judge) on `ruler.num_batches` shared K-batches; returns judges.calibrate.Calibration."""
    import numpy as np

    from generator.judges.calibrate import calibrate_threshold

    ruler = resolved_ruler(ruler)
    check_corpora([corpus])
    names, [(texts, _)] = read_corpora([corpus], text_field)
    check_sizes(names, [texts], ruler)
    owned = judge is None
    judge = judge or open_ruler_judge(ruler, "llm")
    try:
        if hasattr(judge, "prepare"):
            judge.prepare(texts)
        return calibrate_threshold(texts, judge, k=ruler.k, num_batches=ruler.num_batches,
                                   rng=np.random.default_rng(ruler.seed), metric=metric)
    finally:
        if owned:
            judge.close()


def export(run_dir: str | Path, out: str | Path, *, to: str, mix: Sequence[str] = (),
           tokenizer: str | Path | None = None, max_repetition: float | None = None,
           total_tokens: int | None = None, seed: int = 0, text_field: str = "text") -> ExportResult:
    """Mix `run_dir` (a run folder or NAME=PATH:WEIGHT; bare: named after its folder, weight 1) with
    the `mix` sources (NAME=PATH:WEIGHT: run folders or corpora) at token weights, and write them in
    trainer format `to` (datatrove, megatron, nanotron, olmo) into the new or empty folder `out`.
    `max_repetition`: most epochs of any source (None: 4); `total_tokens`: None for the largest
    mix in which no source repeats; `tokenizer`: a local tokenizer (None: the embedded model's)."""
    import numpy as np

    from generator.export.formats import check_out, export_mix
    from generator.export.mixes import (DEFAULT_MAX_REPETITION, check_mix_options, load_source,
                                        load_tokenizer, parse_source, plan_mix)
    from generator.run.verify import is_run_folder, require_intact

    out, max_repetition = Path(out), DEFAULT_MAX_REPETITION if max_repetition is None else max_repetition
    default_name = Path(run_dir).resolve().name.replace(" ", "_")
    specs = [parse_source(str(run_dir), default_name=default_name), *(parse_source(m) for m in mix)]
    check_out(out, inputs=[s.path for s in specs])
    check_mix_options(max_repetition, total_tokens, seed)
    for spec in specs:
        if not Path(spec.path).exists():
            raise UserError(f"source {spec.name!r}: {spec.path}: no such file or folder",
                            fix="check the path of the run or corpus")
    for spec in specs:
        if is_run_folder(Path(spec.path)):
            require_intact(Path(spec.path), "export")
    if tokenizer is not None and not Path(tokenizer).exists():
        raise UserError(f"--tokenizer {tokenizer}: no such file or folder",
                        fix="pass a local tokenizer folder or its tokenizer.json")
    tok = load_tokenizer(tokenizer)
    corpora = [load_source(s, tok, text_field=text_field) for s in specs]
    planned = plan_mix(specs, corpora, tok, rng=np.random.default_rng(seed), seed=seed,
                       max_repetition=max_repetition, total_tokens=total_tokens)
    recipe = export_mix(planned, out, to)
    return ExportResult(out=out, format=to, total_tokens=recipe["total_tokens"]["achieved"], sources=tuple(
        SourceWeight(name=s["name"], kind=s["kind"], num_docs=s["num_docs"], tokens=s["tokens"],
                     repetition=s["repetition"], requested_weight=s["requested_weight"],
                     achieved_weight=s["achieved_weight"]) for s in recipe["sources"]))


def verify(run_dir: str | Path) -> VerifyResult:
    """Check a run folder against itself (shards, checksums, manifest, state, reports); each
    problem names its file and its repair."""
    from generator.run.verify import intact_line, verify_run
    run_dir = Path(run_dir)
    problems = verify_run(run_dir)
    return VerifyResult(run_dir=run_dir, problems=problems, line="" if problems else intact_line(run_dir))


def write_card(run_dir: str | Path) -> Path:
    """Write RUN_DIR/README.md, a dataset card with plots, for an intact run folder; return its path."""
    from generator.export.card import write_card as write
    from generator.run.verify import require_intact
    require_intact(Path(run_dir), "card")
    return write(run_dir)
