"""Where requests come from: the weighted grid (grid.py), sandboxed prompt templates
(templates.py), and seeded requests with content-hash ids (requests.py)."""
