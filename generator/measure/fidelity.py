"""On-topic and on-style fidelity: does each document follow the grid values it was asked for?

Topic: a document is on topic when its own grid topic ranks within the top `top_r` of all grid
topics by cosine similarity to the document's embedding (all-MiniLM-L6-v2) and that similarity
is at least `min_cosine`. A multi-topic document ("a; b; c" in the topic column) with k topics
scores the fraction of its topics it covers: a topic is covered when one of the document's
paragraphs is on it by the single-topic rule, or when the whole document ranks it within the
top `top_r * k` (no cosine floor there: the floor was fitted on single-topic texts). The
paragraph test is needed because a text that treats three subjects in turn has an embedding
that averages them. Style: a few styles have a format that can be checked on the
surface of the text (numbered steps, speaker turns, questions); a document whose style has
such a check passes or fails it, the others are not measured. BENCHMARKS.md ("On-topic
fidelity") records how `top_r` was chosen.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from generator.figures import pyplot, save_figure

TOP_R = 3  # own topic among the 3 grid topics nearest the document ...
MIN_COSINE = 0.4  # ... and at least this similar to it: both fitted in BENCHMARKS.md
GROUP_COLUMNS = ("template", "style", "domain")
MIN_GROUP_DOCS = 5  # check_fidelity names a drifting group only when it has this many documents

Embed = Callable[[Sequence[str]], np.ndarray]

_STEP = re.compile(r"^\s*(?:step\s*)?\d{1,2}[.):]\s+\S", re.IGNORECASE | re.MULTILINE)
_BULLET = re.compile(r"^\s*[-*•]\s+\S", re.MULTILINE)
_SPEAKER = re.compile(r"^\s*\**([A-Z][\w .'-]{0,30}?)\**\s*:\s*\S", re.MULTILINE)
_QUESTION = re.compile(r"\?\s*\**\s*$", re.MULTILINE)
_HEADING = re.compile(r"^\s*(?:#{1,4}\s+\S|\*\*[^*\n]{3,80}\*\*\s*$)", re.MULTILINE)
_GREETING = re.compile(r"^\s*(?:dear|hi|hello)\b[^\n]{0,60},?\s*$", re.IGNORECASE | re.MULTILINE)


def _speakers(text: str) -> int:
    return len({m.group(1).strip().lower() for m in _SPEAKER.finditer(text)})


# style -> surface check of its format; styles not listed are not measured.
STYLE_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "wikihow": lambda t: len(_STEP.findall(t)) >= 3,
    "faq": lambda t: len(_QUESTION.findall(t)) >= 2,
    "dialogue": lambda t: _speakers(t) >= 2,
    "podcast script": lambda t: _speakers(t) >= 1,
    "forum q&a": lambda t: "?" in t and (_speakers(t) >= 2 or len(re.findall(r"\breply|\bposted", t, re.I)) > 0),
    "study guide": lambda t: len(_BULLET.findall(t)) + len(_STEP.findall(t)) >= 3 or len(_HEADING.findall(t)) >= 2,
    "letter": lambda t: bool(_GREETING.search(t)),
}


def check_style(text: str, style: str) -> bool | None:
    """True/False when the style's format can be checked on the text's surface, else None."""
    check = STYLE_CHECKS.get(style.strip().lower())
    return None if check is None else bool(check(text))


def paragraphs(text: str) -> list[str]:
    """A text's paragraphs (split at blank lines and before headings) of over 40 characters:
    shorter pieces, such as a heading that only names a topic, are not evidence of covering it."""
    return [p.strip() for p in re.split(r"\n\s*\n|\n(?=#)", text) if len(p.strip()) > 40]


def split_topics(value: str, topics: Sequence[str]) -> list[str]:
    """The grid topics a document's topic column names ("a; b; c" for multi-topic templates)."""
    known = set(topics)
    if value in known:
        return [value]
    return [part for part in value.split("; ") if part in known]


def grid_topics(grid) -> list[str] | None:
    """The topic values of a grid (sampling.grid.Grid); None without a topic axis."""
    axis = grid.axes.get("topic")
    return None if axis is None else [v.value for v in axis.values]


def corpus_topics(topic_values: Sequence[str]) -> list[str]:
    """The distinct topics a corpus's topic column names: the topic list to rank against when
    the grid is unknown (e.g. `generator score` on a corpus file)."""
    return sorted({part for value in topic_values if value for part in value.split("; ") if part})


def topic_ranks(doc_vectors: np.ndarray, topic_vectors: np.ndarray, own: Sequence[int]) -> np.ndarray:
    """1-based rank of topic `own[i]` among all topics by cosine similarity to document i
    (vectors L2-normalised; ties count against the document)."""
    sims = doc_vectors @ topic_vectors.T
    own_sims = sims[np.arange(len(own)), np.asarray(own, dtype=int)]
    return (sims >= own_sims[:, None]).sum(axis=1)


def on_source(doc_vectors: np.ndarray, source_vectors: np.ndarray, own: Sequence[int],
              top_r: int = TOP_R) -> np.ndarray:
    """Per rewrite, whether it stayed on its source: its own source unit ranks within the top
    `top_r` of all source units by cosine similarity (the on-topic rule with the source units as
    the topics). A rewrite that drifts off to a generic text on the same theme ranks its source
    below passages it resembles as much, and counts as off-source."""
    return topic_ranks(doc_vectors, source_vectors, own) <= top_r


def wilson_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial share over n documents ((nan, nan) when n = 0;
    for multi-topic documents, whose on-topic value is a fraction, an approximation)."""
    if n <= 0 or share != share:
        return float("nan"), float("nan")
    centre, denom = share + z * z / (2 * n), 1 + z * z / n
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return round(max(0.0, (centre - half) / denom), 4), round(min(1.0, (centre + half) / denom), 4)


@dataclass(frozen=True)
class GroupShare:
    column: str  # template, style or domain
    value: str
    num_docs: int
    topic_share: float  # mean on-topic fraction of its documents
    num_style_docs: int  # documents whose style has a surface check
    style_share: float | None
    ci_low: float = float("nan")  # 95% Wilson interval of topic_share
    ci_high: float = float("nan")


@dataclass(frozen=True)
class FidelityReport:
    num_docs: int  # documents with at least one grid topic
    num_topics: int  # grid topics each document was ranked against
    top_r: int
    min_cosine: float
    topic_share: float
    num_style_docs: int
    style_share: float | None
    groups: tuple[GroupShare, ...]
    ci_low: float = float("nan")  # 95% Wilson interval of topic_share
    ci_high: float = float("nan")

    def by(self, column: str) -> tuple[GroupShare, ...]:
        return tuple(g for g in self.groups if g.column == column)

    def to_dict(self) -> dict:
        return asdict(self)


def document_fidelity(texts: Sequence[str], topic_values: Sequence[str], styles: Sequence[str],
                      topics: Sequence[str], *, embed: Embed, top_r: int = TOP_R,
                      min_cosine: float = MIN_COSINE, doc_vectors: np.ndarray | None = None) -> tuple[np.ndarray, list[bool | None]]:
    """Per document: on-topic fraction (NaN without a grid topic) and style check (None if not
    measured). `doc_vectors` (normalised, one row per text) skips embedding the texts again."""
    topics = list(dict.fromkeys(topics))
    index = {t: i for i, t in enumerate(topics)}
    named = [split_topics(v, topics) for v in topic_values]
    on_topic = np.full(len(texts), np.nan)
    rows = [i for i, n in enumerate(named) if n]
    if rows:
        vectors = doc_vectors[rows] if doc_vectors is not None else embed([texts[i] for i in rows])
        topic_vectors = embed(topics)
        multi = [row for row in rows if len(named[row]) > 1]
        pieces = {row: paragraphs(texts[row]) for row in multi}
        flat = [p for row in multi for p in pieces[row]]
        piece_vectors = iter(embed(flat) if flat else [])
        for row, vector in zip(rows, vectors):
            own = [index[t] for t in named[row]]
            ranks = topic_ranks(np.repeat(vector[None, :], len(own), axis=0), topic_vectors, own)
            if len(own) == 1:
                found = (ranks <= top_r) & (float(topic_vectors[own[0]] @ vector) >= min_cosine)
            else:
                found = ranks <= top_r * len(own)
                for _ in pieces[row]:
                    sims = topic_vectors @ next(piece_vectors)
                    found |= np.array([(sims >= sims[o]).sum() <= top_r and sims[o] >= min_cosine for o in own])
            on_topic[row] = float(np.mean(found))
    on_style = [check_style(t, s) if s else None for t, s in zip(texts, styles)]
    return on_topic, on_style


def measure_fidelity(texts: Sequence[str], metadata: Mapping[str, Sequence[str]], topics: Sequence[str],
                     *, embed: Embed, top_r: int = TOP_R, min_cosine: float = MIN_COSINE,
                     doc_vectors: np.ndarray | None = None) -> FidelityReport:
    """Fidelity of a corpus: overall and per template, style and domain. `metadata` holds the
    corpus's string columns (as `scoring.load_corpus` returns them); `topics` is the grid's
    topic list (or the corpus's distinct topics when the grid is unknown)."""
    n = len(texts)
    for name in ("topic", *GROUP_COLUMNS):
        if name in metadata and len(metadata[name]) != n:
            raise ValueError(f"measure_fidelity: column {name!r} has {len(metadata[name])} values for {n} texts")
    column = lambda name: list(metadata.get(name) or [""] * n)  # noqa: E731
    on_topic, on_style = document_fidelity(texts, column("topic"), column("style"), topics,
                                           embed=embed, top_r=top_r, min_cosine=min_cosine,
                                           doc_vectors=doc_vectors)
    groups = []
    for name in GROUP_COLUMNS:
        values = column(name)
        for value in sorted({v for v in values if v}):
            members = [i for i, v in enumerate(values) if v == value]
            groups.append(_share(name, value, on_topic[members], [on_style[i] for i in members]))
    overall = _share("all", "", on_topic, on_style)
    return FidelityReport(num_docs=overall.num_docs, num_topics=len(set(topics)), top_r=top_r,
                          min_cosine=min_cosine,
                          topic_share=overall.topic_share, num_style_docs=overall.num_style_docs,
                          style_share=overall.style_share, ci_low=overall.ci_low, ci_high=overall.ci_high,
                          groups=tuple(g for g in groups if g.num_docs or g.num_style_docs))


def _share(column: str, value: str, on_topic: np.ndarray, on_style: Sequence[bool | None]) -> GroupShare:
    measured = on_topic[~np.isnan(on_topic)]
    styled = [s for s in on_style if s is not None]
    share = round(float(measured.mean()), 4) if measured.size else float("nan")
    low, high = wilson_interval(share, measured.size)
    return GroupShare(column=column, value=value, num_docs=int(measured.size), topic_share=share,
                      num_style_docs=len(styled), style_share=round(float(np.mean(styled)), 4) if styled else None,
                      ci_low=low, ci_high=high)


def report_from_dict(d: Mapping) -> FidelityReport:
    """A FidelityReport from its to_dict() form (summary.json, diversity.json)."""
    return FidelityReport(**{**d, "groups": tuple(GroupShare(**g) for g in d["groups"])})


@dataclass(frozen=True)
class FidelityCheck:
    action: Literal["ok", "warn", "stop"]
    min_fidelity: float
    topic_share: float
    drifting: tuple[GroupShare, ...]  # templates, styles, domains below min_fidelity
    message: str
    report: FidelityReport | None = None  # what was checked (run/drift.py reweights from it)


def check_fidelity(report: FidelityReport, min_fidelity: float, *, stop: bool = False,
                   min_group_docs: int = MIN_GROUP_DOCS) -> FidelityCheck:
    """Compare a report with `min_fidelity` (target.min_fidelity). "warn" when the overall topic
    share or any group with at least `min_group_docs` documents falls below it; "stop" instead of
    "warn" for the overall share when `stop` is set. `drifting` lists the groups to reweight away."""
    drifting = tuple(g for g in report.groups if g.num_docs >= min_group_docs and g.topic_share < min_fidelity)
    low = report.num_docs > 0 and report.topic_share < min_fidelity
    if not low and not drifting:
        return FidelityCheck("ok", min_fidelity, report.topic_share, (), "", report)
    names = ", ".join(f"{g.column}={g.value} ({g.topic_share:.2f}, {g.num_docs} docs)" for g in drifting)
    message = (f"on-topic share {report.topic_share:.2f} (own topic in the top {report.top_r} of "
               f"{report.num_topics}) is below min_fidelity {min_fidelity}" if low else
               f"on-topic share {report.topic_share:.2f} meets min_fidelity {min_fidelity}, but some groups drift")
    if names:
        message += f"; drifting: {names}"
    return FidelityCheck("stop" if low and stop else "warn", min_fidelity, report.topic_share, drifting, message, report)


def plot_fidelity(report: FidelityReport, png: Path) -> Path:
    """Horizontal bars: on-topic share per template, style and domain with 95% Wilson intervals,
    the style-format share where measured, the overall share as a dashed line."""
    plt = pyplot()

    rows = [g for column in GROUP_COLUMNS for g in report.by(column) if g.num_docs]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.6))
    y = np.arange(len(rows))
    share = np.array([g.topic_share for g in rows])
    err = np.clip([share - [g.ci_low for g in rows], [g.ci_high for g in rows] - share], 0, 1)
    ax.barh(y - 0.2, share, height=0.4, xerr=err, capsize=2, color="tab:blue", label="on topic (95% interval)")
    ax.barh(y + 0.2, [g.style_share or 0.0 for g in rows], height=0.4, color="tab:orange",
            label="style format (where checked)")
    ax.axvline(report.topic_share, color="k", lw=1, ls="--", label=f"all: {report.topic_share:.2f}")
    ax.set_yticks(y, [f"{g.column}: {g.value[:40]} (n={g.num_docs})" for g in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of documents (own topic in the top {report.top_r} of {report.num_topics}, "
                  f"cosine ≥ {report.min_cosine})")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, png, dpi=110)
