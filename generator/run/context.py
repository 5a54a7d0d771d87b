"""What every round of one steered run works with: the plan, the pipeline, the judges, the
reference, the axes it steers, and the run's named random streams."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.recipe import Plan, pilot_size
from generator.records import Backend
from generator.run import knobs
from generator.run.loop import Pipeline
from generator.run.policy import CALIBRATION_SHARE, Goal
from generator.run.reference import ReferenceStats, Shift, measure_shift, read_shift_inputs

STREAMS = {"pilot": 101, "growth": 202, "main": 303, "reference": 505, "shift": 606, "calibrate": 707,
           "confirm": 808, "final": 909, "draw": 111}  # named random streams of the controller


TEMPLATE_ORDER_STREAM = 4243  # the seeded order of a rewrite run's templates


def stream(seed: int, name: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name], *more])


def steered_orders(plan: Plan) -> dict[str, list[str]]:
    """The seeded value orders concentration keeps a prefix of: every grid axis, and in a rewrite
    run the templates too (the rewrite's format is the axis that moves its D most). A rewrite
    run's sources are no axis: each unit gets its per_source rewrites whatever the weights."""
    orders = knobs.axis_orders(plan.grid, plan.recipe.seed)
    if plan.source is not None and len(plan.templates) > 1:
        rng = np.random.default_rng([plan.recipe.seed, TEMPLATE_ORDER_STREAM])
        orders["template"] = [plan.templates[i].name for i in rng.permutation(len(plan.templates))]
    return orders


@dataclass(frozen=True)
class Context:
    """What every round of one run works with (the plan and axis orders change when the grid grows)."""

    plan: Plan
    out: Path
    pipe: Pipeline
    judge: object
    orders: dict
    reference: ReferenceStats | None = None
    embed: object = None  # texts -> embeddings, for the shift from the reference and the calibrated judge
    llm: object = None  # target.judge llm: the LLM judge; it calibrates `judge` and confirms the corpus
    llm_target: object = None  # its target (ctx.target is then on the calibrated embedding judge's scale)
    calibration: dict | None = None

    @property
    def target(self):
        return self.plan.recipe.target

    @property
    def backend(self) -> Backend:
        return self.pipe.backend

    def rng(self, name: str, *more: int) -> np.random.Generator:
        return stream(self.plan.recipe.seed, name, *more)

    def goal(self, state=None) -> Goal:
        """What the policy steers to; with `state`, what the calibration has discarded so far (the
        sweep just measured counted but one point, which may go into the corpus)."""
        t, num_docs, n = self.target, self.plan.recipe.size.num_docs, pilot_size(self.plan.recipe)
        discarded = 0
        if state is not None:
            discarded = state.steering.discarded_pilot_docs + max(0, state.counters.aside_docs - n)
        return Goal(score=t.score, tolerance=t.tolerance, k=t.k, num_docs=num_docs,
                    max_pilot_rounds=t.max_pilot_rounds, max_shift=t.max_shift if self.reference else None,
                    # growth adds topics; a rewrite run's subjects are its source's
                    can_grow=t.grow_grid and "topic" in self.plan.grid.axes and self.plan.source is None,
                    max_growth_rounds=t.max_growth_rounds, judge=self.judge.name, pilot_docs=n,
                    max_discarded=int(CALIBRATION_SHARE * num_docs), discarded=discarded,
                    num_rounds=t.num_rounds, lookahead=state.steering.lookahead if state is not None else 0,
                    rewrite=self.plan.source is not None, relative_to=self.relative_to)

    @property
    def relative_to(self) -> float:
        """The reference's D when target.relative set the score the run steers to (0 otherwise, and
        with an LLM judge, whose target the calibrated embedding judge's scale replaced)."""
        relative = self.target.relative is not None and self.reference is not None and self.llm is None
        return self.reference.score if relative else 0.0

    def shift_of(self, root: Path, round_no: int, below: int | None = None) -> Shift | None:
        """The documents under `root` (samples below `below`) against the reference (None without one)."""
        if self.reference is None:
            return None
        texts, columns = read_shift_inputs(root, below)
        return measure_shift(texts, columns, self.reference, self.embed, self.rng("shift", round_no))

    def point_shifts(self, root: Path, round_no: int, point_rows) -> list[Shift | None]:
        """Each sweep point's documents (its rows of `root`, in index order) against the reference,
        the folder read once (Nones without a reference)."""
        if self.reference is None:
            return [None] * len(point_rows)
        texts, columns = read_shift_inputs(root)
        return [measure_shift([texts[i] for i in rows], {k: [v[i] for i in rows] for k, v in columns.items()},
                              self.reference, self.embed, self.rng("shift", round_no * 100 + j))
                for j, rows in enumerate(point_rows)]
