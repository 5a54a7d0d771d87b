"""Reading a clustering answer: member numbers as the judge wrote them, and the repair of an
answer into a partition of the batch (see `diversity.repair_partition`), and the batch's
result once verified. Nothing here raises on a strange member: it is counted."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from generator.judges.protocol import FIX_KINDS, REPAIR_KINDS, BatchClustering, apply_policy, repair_partition
from generator.judges.calls import Cost, Reply, ReplyError


def parse_clusters(data: object) -> list[tuple[list[int | None], str]]:
    """[(1-based member numbers, reason)] per proposed cluster, as the judge wrote them; a
    member that is not a whole number becomes None (the repair counts it out of range)."""
    clusters = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(clusters, list) or not clusters:
        raise ReplyError("no 'clusters' list")
    if any(not isinstance(c, dict) or not isinstance(c.get("members"), list) for c in clusters):
        raise ReplyError("every cluster needs a 'members' list")
    return [([member_number(m) for m in c["members"]], _text(c.get("reason"))) for c in clusters]


def member_number(member: object) -> int | None:
    """A member as a whole number: ints, integral floats, and strings of decimal digits in any
    script ("3", "٣"); None for anything else (superscripts such as "²", words, nulls)."""
    if isinstance(member, bool):
        return None
    if isinstance(member, int):
        return member
    if isinstance(member, float):
        return int(member) if member.is_integer() else None
    if isinstance(member, str):
        digits = member.strip()
        if 0 < len(digits) <= 18 and all(unicodedata.decimal(ch, None) is not None for ch in digits):
            return int("".join(str(unicodedata.decimal(ch)) for ch in digits))
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Proposal:
    """A clustering answer repaired into a partition of range(K), before verification."""

    clusters: tuple[tuple[int, ...], ...]
    reasons: tuple[str, ...]  # per cluster: the reason of the proposed cluster it came from
    repairs: dict[str, int]
    fixes: dict[str, int]


def repair_reply(proposed: list[tuple[list[int | None], str]], k: int) -> Proposal:
    """Numbers 1..K become positions 0..K-1. An answer whose members are all whole numbers
    in 0..K-1 and that uses 0 was numbered from 0: it is shifted (counted as `zero_based`).
    Empty clusters are counted and dropped."""
    numbers = [n for members, _ in proposed for n in members]
    zero_based = 0 in numbers and all(n is not None and 0 <= n < k for n in numbers)
    offset = 0 if zero_based else 1
    groups = [[-1 if n is None else n - offset for n in members] for members, _ in proposed]
    clusters, repairs = repair_partition(groups, k)
    fixes = dict.fromkeys(FIX_KINDS, 0)
    fixes["zero_based"] = int(zero_based)
    fixes["empty_cluster"] = sum(not members for members, _ in proposed)
    reasons = tuple(next((reason for g, (_, reason) in zip(groups, proposed) if c[0] in g), "") for c in clusters)
    return Proposal(clusters, reasons, repairs, fixes)


def finish_batch(reply: Reply, proposal: Proposal | None, check: Reply | None, policy: str) -> BatchClustering:
    """The batch's clustering from its answer, repaired `proposal` and verification `check`,
    under the invalid-cluster `policy`; a failed answer or check fails the batch with its kind."""
    cost = vars(Cost().absorb([reply, check]))
    if proposal is None or (check is not None and check.value is None):
        failed = reply if proposal is None else check
        return BatchClustering(clusters=(), failed=True, error=failed.error, failure=failed.failure,
                               repairs=dict.fromkeys(REPAIR_KINDS, 0), **cost)
    verdicts = tuple(sorted((check.value if check is not None else {}).items()))
    clusters, repairs, fixes = apply_policy(proposal.clusters, verdicts, policy, proposal.repairs, proposal.fixes)
    if not clusters:
        return BatchClustering(clusters=(), failed=True, error="every cluster was judged invalid and dropped",
                               failure="dropped", repairs=repairs, fixes=fixes, proposal=proposal.clusters,
                               verdicts=verdicts, **cost)
    return BatchClustering(clusters=clusters, repairs=repairs, fixes=fixes, proposal=proposal.clusters,
                           verdicts=verdicts, **cost)
