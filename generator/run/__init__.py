"""How a run is driven: the generation loop (loop.py), results to documents (documents.py),
duplicate removal (dedup.py), the run folder's state (state.py), and the controller that steers
to a target diversity (controller.py, with its pure knobs in knobs.py, its rounds' bookkeeping in
rounds.py, grid growth in growth.py and plots in plots.py)."""
