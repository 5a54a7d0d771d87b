"""How a corpus leaves: token-weighted mixes (mixes.py), trainer formats (formats.py) and the
Hugging Face dataset card (card.py)."""
