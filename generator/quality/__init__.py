"""How a document earns its place: the recipe's `quality:` section (config.py, its checks in
checks.py), the gates built from it once per run (gates.py, datatrove's filters as the library),
the evaluation sets it decontaminates against (evalsets.py), and the rejection tables of the
summary and the card (report.py)."""
