"""How a corpus is measured: the diversity report (report.py), proxies (proxies.py),
distribution shift (shift.py) and the sentence embeddings they use (embeddings.py)."""
