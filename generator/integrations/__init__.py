"""Steps for other data frameworks that call the Python API: datatrove (datatrove.py)."""
