"""The one way PNG figures are drawn and saved (matplotlib, headless), for run plots, reports
and dataset cards."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, png: Path, *, dpi: int = 110) -> Path:
    """Lay out, write `png` (its folder is created) and free the figure."""
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=dpi)
    pyplot().close(fig)
    return png
