"""Is a three-topic document's low on-topic share the measure's doing? Rank each paragraph's
embedding against the grid's topics instead of the whole document's, and compare.

    python bench/multitopic_paragraphs.py runs/f200/multitopic_style_persona

A topic counts under the paragraph rule when some paragraph ranks it within the top r of all
grid topics (optionally at cosine >= c); under the whole-document rule when the document ranks
it within the top 3k (k = 3 topics). The shipped rule (`measure.fidelity`) counts a topic that
either finds, with r = 3 and c = 0.4.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    from generator.measure.embeddings import embed_texts
    from generator.measure.fidelity import paragraphs
    from generator.readers import load_corpus

    texts, meta = load_corpus(Path(sys.argv[1]) / "data")
    grid = yaml.safe_load((ROOT / "topics" / "topics.yaml").read_text())
    topics = [t if isinstance(t, str) else t["value"] for d in grid["domains"] for t in d["topics"]]
    index = {t: i for i, t in enumerate(topics)}
    topic_vectors, doc_vectors = embed_texts(topics), embed_texts(texts)
    parts = [paragraphs(t) or [t] for t in texts]
    part_vectors = embed_texts([p for ps in parts for p in ps])
    owner = np.repeat(np.arange(len(texts)), [len(ps) for ps in parts])
    print(f"{len(texts)} documents, {len(owner) / len(texts):.1f} paragraphs each")
    for r, c in ((3, 0.0), (3, 0.4), (9, 0.0)):
        whole, by_part = [], []
        for i in range(len(texts)):
            own = [index[x] for x in meta["topic"][i].split("; ") if x in index]
            sims = doc_vectors[i] @ topic_vectors.T
            whole.append(np.mean([(sims > sims[o]).sum() + 1 <= 3 * len(own) for o in own]))
            ps = part_vectors[owner == i] @ topic_vectors.T
            by_part.append(np.mean([bool(((((ps > ps[:, [o]]).sum(1) + 1) <= r) & (ps[:, o] >= c)).any())
                                    for o in own]))
        print(f"paragraph rule top {r}, cosine >= {c}: {np.mean(by_part):.2f}   whole-document rule: {np.mean(whole):.2f}")


if __name__ == "__main__":
    main()
