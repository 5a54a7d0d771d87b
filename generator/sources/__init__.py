"""Rewriting a real corpus: every source document (or chunk of one) rewritten exactly k times.

    config.py    the recipe's `source:` section and its value checks
    read.py      streaming the source's rows (Parquet, JSONL, JSONL.gz, save_to_disk; local or fsspec)
    chunks.py    cutting long documents at paragraph boundaries by tokens of the generator's tokenizer
    units.py     the units to rewrite in the seeded order, and a cursor that fetches them by position
    record.py    the source's count kept in the run folder, so a resume does not count it again
    slots.py     which (unit, rewrite) sample index i stands for, with fill passes for missed slots
    coverage.py  which units and source documents got all k rewrites, which did not and why

The mapping contract: pass 0 spans indices 0..U·k−1 and index i is slot i, i.e. unit i // k,
rewrite i % k (units in the seeded order, each expanded into k consecutive indices). A slot whose
sample became no document (failed, rejected by a gate, duplicate) is tried again in the next pass
(at most `max_attempts` in all); pass p+1 opens only once pass p is committed, and lists the missed
slots of pass p in slot order, so index → slot is a function of the seed, the source and the
committed outcomes, all on disk. The other grid axes and the template are drawn from sample i's own
seeded uniforms, as for grid runs (`sampling/requests.py`).
"""
