"""Pictures for people: the volume trend plot and the mask preview (PNG bytes).

Figures use matplotlib's object API with the Agg canvas, never pyplot, whose global state
is not safe in the API server's threads.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "png_bytes"]


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure of that size (inches, 100 dpi) on its own Agg canvas."""
    figure = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure encoded as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
