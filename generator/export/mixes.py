"""Token-weighted mixes of generated runs and real corpora.

A mix is a list of sources `NAME=PATH:WEIGHT`; a source is a run folder (its Parquet shards
under data/) or a real corpus (anything `generator.measure.report.load_corpus` reads). Weights are
shares of *tokens*, not documents (documents differ in length), normalised to sum to 1.

Realising the weights, per source s with `available_s` tokens and share `w_s`:

- the total T is `total_tokens` when given, else the largest mix in which no source repeats
  (T = min_s available_s / w_s: the binding source is used once, the others are subsampled);
- the source must supply `t_s = w_s * T` tokens, i.e. `t_s / available_s` epochs, at most
  `max_repetition` (a clear error names the source otherwise);
- whole epochs take every document once more; the remaining fraction is a seeded random
  subset of documents, taken in permuted order until the running total is closest to `t_s`.

Token counts are of the document text alone (no special tokens); a consumer that appends one
EOS per document adds exactly one token per written document.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from generator.errors import UserError
from generator.records import GRID_COLUMNS

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER_MODEL = "embedded:smollm2-135m"
DEFAULT_MAX_REPETITION = 4.0  # Muennighoff et al. 2023: up to ~4 epochs cost little against unique data
MAX_REPETITION = 1000.0  # most epochs --max-repetition allows (each epoch is a copy of the picks in memory)
MAX_TOTAL_TOKENS = 10**13  # most tokens --total-tokens asks for
PROVENANCE_COLUMNS = (*GRID_COLUMNS, "model", "recipe_hash")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    path: str
    weight: float


@dataclass(frozen=True)
class Tokenizer:
    """A local Hugging Face tokenizer file and the token consumers append after each document."""

    path: str  # the tokenizer.json file
    name: str  # its folder name, used where a consumer wants a tokenizer id
    eos_token: str
    eos_token_id: int
    vocab_size: int


@dataclass(frozen=True, eq=False)
class Corpus:
    """One source read once: texts, ids, provenance columns and tokens per document."""

    name: str
    path: str
    kind: Literal["run", "corpus"]
    texts: tuple[str, ...]
    ids: tuple[str, ...]
    columns: Mapping[str, tuple[str, ...]]  # PROVENANCE_COLUMNS, "" where the source lacks one
    num_tokens: np.ndarray  # int64, one per document
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def available_tokens(self) -> int:
        return int(self.num_tokens.sum())


@dataclass(frozen=True, eq=False)
class MixedSource:
    spec: SourceSpec
    corpus: Corpus
    requested_weight: float  # normalised
    target_tokens: int
    picks: np.ndarray  # document indices in write order; a repeated document appears again
    epochs: np.ndarray  # 0 for a document's first copy, 1 for its second, ...

    @property
    def tokens(self) -> int:
        return int(self.corpus.num_tokens[self.picks].sum())

    @property
    def repetition(self) -> float:
        return self.tokens / max(1, self.corpus.available_tokens)


@dataclass(frozen=True, eq=False)
class Mix:
    sources: tuple[MixedSource, ...]
    tokenizer: Tokenizer
    max_repetition: float
    requested_total_tokens: int | None
    seed: int

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.sources)

    def achieved_weight(self, source: MixedSource) -> float:
        return source.tokens / max(1, self.total_tokens)


# ---- sources ------------------------------------------------------------------------------------

def parse_source(text: str, *, default_name: str | None = None) -> SourceSpec:
    """`NAME=PATH:WEIGHT` → SourceSpec. A bare PATH (allowed where `default_name` is given)
    means that name and weight 1."""
    if "=" not in text:
        if default_name is None:
            raise UserError(f"--mix {text!r}: expected NAME=PATH:WEIGHT", fix="e.g. --mix web=data/c4.parquet:0.7")
        return SourceSpec(name=_check_name(default_name, text), path=text, weight=1.0)
    name, rest = text.split("=", 1)
    path, sep, raw = rest.rpartition(":")
    if not sep or not path:
        raise UserError(f"--mix {text!r}: no :WEIGHT after the path", fix=f"e.g. {name}={rest}:0.5")
    try:
        weight = float(raw)
    except ValueError:
        raise UserError(f"--mix {text!r}: weight {raw!r} is not a number", fix=f"e.g. {name}={path}:0.5") from None
    if not weight > 0 or not math.isfinite(weight):
        raise UserError(f"--mix {text!r}: weight must be positive, got {raw}", fix="use a token share > 0")
    return SourceSpec(name=_check_name(name, text), path=path, weight=weight)


def _check_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise UserError(f"{where!r}: source name {name!r} must be letters, digits, '_', '-' or '.'",
                        fix="rename it, e.g. synthetic or web_real")
    return name


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / "data").glob("shard-*.parquet"))


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """A local tokenizer folder (with tokenizer.json) or file; default: the embedded model's."""
    if path is None:
        from generator.backends.models import resolve_model

        path = resolve_model(DEFAULT_TOKENIZER_MODEL)
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--tokenizer {path}: no tokenizer.json there",
                        fix="pass a local tokenizer folder (tokenizer.save_pretrained(DIR)) or its tokenizer.json")
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise UserError("exports need the package 'tokenizers'",
                        fix="pip install 'generator[cpu]' (or pip install tokenizers)") from None
    try:
        tok = HFTokenizer.from_file(str(file))
    except Exception as exc:  # noqa: BLE001 - the tokenizers package raises a bare Exception
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UserError(f"--tokenizer {path}: {file.name} is not a tokenizer.json ({reason})",
                        fix="pass a tokenizer folder saved with tokenizer.save_pretrained(DIR), "
                            "or the tokenizer.json inside it") from None
    eos = _eos_token(tok, file.parent)
    return Tokenizer(path=str(file.resolve()), name=file.resolve().parent.name, eos_token=eos,
                     eos_token_id=tok.token_to_id(eos), vocab_size=tok.get_vocab_size())


def _eos_token(tok, folder: Path) -> str:
    """The document separator: <|endoftext|> when the vocabulary has it (the pretraining EOS of
    GPT-2-style vocabularies), else the eos_token of tokenizer_config.json."""
    if tok.token_to_id("<|endoftext|>") is not None:
        return "<|endoftext|>"
    config = folder / "tokenizer_config.json"
    try:
        eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token") if config.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        raise UserError(f"{config}: cannot be read as a JSON mapping",
                        fix="repair or delete tokenizer_config.json (a tokenizer.json with <|endoftext|> "
                            "needs none)") from None
    if isinstance(eos, dict):
        eos = eos.get("content")
    if not eos or tok.token_to_id(eos) is None:
        raise UserError(f"{folder}: cannot tell the tokenizer's end-of-document token",
                        fix="use a tokenizer folder whose tokenizer_config.json names eos_token")
    return eos


def count_tokens(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 1000) -> np.ndarray:
    """Tokens per text, without special tokens."""
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(tokenizer.path)
    counts = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        encoded = tok.encode_batch(list(texts[start:start + batch_size]), add_special_tokens=False)
        counts[start:start + len(encoded)] = [len(e.ids) for e in encoded]
    return counts


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(tokenizer.path)
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def load_source(spec: SourceSpec, tokenizer: Tokenizer, *, text_field: str = "text") -> Corpus:
    """Read a run folder or a real corpus; documents without text are dropped (consumers skip them)."""
    from generator.measure.report import load_corpus

    path = Path(spec.path)
    if is_run_folder(path):
        from generator.files import read_documents

        table = read_documents(path).to_pydict()
        texts, meta, kind = table["text"], {k: v for k, v in table.items() if k != "text"}, "run"
        provenance = run_provenance(path, meta)
    else:
        texts, meta = load_corpus(path, text_field)
        kind, provenance = "corpus", {"corpus": str(path.resolve()), "text_field": text_field}
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise UserError(f"source {spec.name!r} ({path}): every document is empty", fix="point at a corpus with text")
    if len(keep) < len(texts):
        log.warning("source %s: dropped %d empty documents", spec.name, len(texts) - len(keep))
    ids = meta.get("id") or [f"{spec.name}-{i:08d}" for i in range(len(texts))]
    columns = {c: tuple(str(meta[c][i] or "") if c in meta else "" for i in keep) for c in PROVENANCE_COLUMNS}
    kept = [texts[i] for i in keep]
    return Corpus(name=spec.name, path=str(path.resolve()), kind=kind, texts=tuple(kept),
                  ids=tuple(str(ids[i]) for i in keep), columns=columns,
                  num_tokens=count_tokens(tokenizer, kept), provenance=provenance)


def run_provenance(run: Path, meta: Mapping[str, list]) -> dict:
    """Where a generated run came from: recipe, hashes, models, and its diversity report."""
    from generator.files import read_json, read_run_yaml  # a damaged file raises UserError

    recipe_file = run / "recipe.resolved.yaml"
    recipe = read_run_yaml(recipe_file) if recipe_file.is_file() else {}
    name = recipe.get("name") if isinstance(recipe, dict) else None
    out: dict[str, Any] = {"run": run.resolve().name, "recipe": name,
                           "recipe_hashes": sorted(set(meta.get("recipe_hash", []))),
                           "models": sorted(set(meta.get("model", [])))}
    d = read_json(run / "diversity.json") if (run / "diversity.json").is_file() else None
    if isinstance(d, dict):
        out["diversity"] = {k: d.get(k) for k in ("judge", "k", "score", "ci_low", "ci_high", "num_scored")}
        if d.get("proxies"):
            out["diversity"]["proxies"] = d["proxies"]
    s = read_json(run / "summary.json") if (run / "summary.json").is_file() else None
    if isinstance(s, dict):
        for key in ("target", "achieved"):
            if key in s:
                out[key] = s[key]
    return out


# ---- the mix ------------------------------------------------------------------------------------

def check_mix_options(max_repetition: float, total_tokens: int | None, seed: int = 0) -> None:
    """Reject impossible mix options before any corpus or tokenizer is loaded."""
    if not max_repetition > 0:
        raise UserError(f"--max-repetition {max_repetition}: must be positive", fix="e.g. --max-repetition 4")
    if not max_repetition <= MAX_REPETITION:
        raise UserError(f"--max-repetition {max_repetition}: must be at most {MAX_REPETITION:g} epochs",
                        fix="e.g. --max-repetition 4")
    if total_tokens is not None and total_tokens <= 0:
        raise UserError(f"--total-tokens {total_tokens}: must be positive", fix="e.g. --total-tokens 1000000")
    if total_tokens is not None and total_tokens > MAX_TOTAL_TOKENS:
        raise UserError(f"--total-tokens {total_tokens}: must be at most {MAX_TOTAL_TOKENS:.0e}",
                        fix="e.g. --total-tokens 1000000000")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: must be in [0, 2**63 - 1]", fix="e.g. --seed 0")


def plan_mix(specs: Sequence[SourceSpec], corpora: Sequence[Corpus], tokenizer: Tokenizer, *,
             rng: np.random.Generator, seed: int = 0, max_repetition: float = DEFAULT_MAX_REPETITION,
             total_tokens: int | None = None) -> Mix:
    """Pick (and repeat) documents per source so the token shares match the weights."""
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"source name {duplicate!r} is used twice", fix="give every --mix source its own NAME")
    check_mix_options(max_repetition, total_tokens, seed)
    weights = np.array([s.weight for s in specs], dtype=float)
    if not np.isfinite(weights.sum()):
        raise UserError(f"the weights {[s.weight for s in specs]} add up to more than a float holds",
                        fix="give the weights as shares, e.g. 0.7 and 0.3")
    weights /= weights.sum()
    available = np.array([c.available_tokens for c in corpora], dtype=float)
    total = total_tokens if total_tokens is not None else int(np.floor((available / weights).min()))
    mixed = []
    for spec, corpus, w in zip(specs, corpora, weights):
        target = int(round(w * total))
        if target == 0:
            raise UserError(f"source {spec.name!r} gets no tokens: its weight is {w:.3g} "
                            f"of the {total}-token mix",
                            fix=f"raise the weight of {spec.name!r} (to a share of at least "
                                f"{1 / max(total, 1):.3g}), or drop it from the mix")
        needed = target / corpus.available_tokens
        if needed > max_repetition + 1e-9:
            raise UserError(
                f"source {spec.name!r} ({spec.path}) needs {needed:.2f} repetitions to supply {target} tokens "
                f"({w:.1%} of {total}) from its {corpus.available_tokens} tokens, "
                f"over --max-repetition {max_repetition:g}",
                fix=f"raise --max-repetition to {math.ceil(needed * 100) / 100:g}, lower --total-tokens to "
                    f"{int(max_repetition * corpus.available_tokens / w)} or lower the weight of {spec.name!r}")
        picks, epochs = pick_documents(corpus.num_tokens, target, rng)
        mixed.append(MixedSource(spec=spec, corpus=corpus, requested_weight=float(w), target_tokens=target,
                                 picks=picks, epochs=epochs))
    return Mix(sources=tuple(mixed), tokenizer=tokenizer, max_repetition=max_repetition,
               requested_total_tokens=total_tokens, seed=seed)


def pick_documents(num_tokens: np.ndarray, target: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (with their epoch) whose tokens sum closest to `target`: whole epochs, then a
    random subset for the fraction, all shuffled together."""
    available = int(num_tokens.sum())
    full = target // available
    rest = target - full * available
    order = rng.permutation(len(num_tokens))
    running = np.cumsum(num_tokens[order])
    cut = int(np.searchsorted(running, rest))  # documents before the one crossing `rest`
    before = int(running[cut - 1]) if cut else 0
    if cut < len(order) and running[cut] - rest <= rest - before:
        cut += 1  # include the crossing document when that lands closer
    partial = order[:cut] if rest else order[:0]
    picks = np.concatenate([np.tile(np.arange(len(num_tokens)), full), partial]).astype(np.int64)
    epochs = np.concatenate([np.repeat(np.arange(full), len(num_tokens)),
                             np.full(len(partial), full)]).astype(np.int64)
    shuffle = rng.permutation(len(picks))
    return picks[shuffle], epochs[shuffle]
