"""The look of every figure: colour-blind-safe colours, print-readable sizes, small PNG files.

Colours are the Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008), distinguishable with the
common colour-vision deficiencies; meanings are fixed across figures (normal blue, anomalous vermillion,
source blue, target orange, training clips grey, SMOTE samples purple). Figures are
`matplotlib.figure.Figure` objects drawn with the Agg canvas (no pyplot, no display, no global state).
PNGs are written at 100 dpi and reduced to a 256-colour palette (Pillow, a matplotlib dependency), which keeps
the lines sharp at a third of the size; the write is atomic (temporary name, then rename).
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # Never a display, even where pyplot is imported elsewhere.

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from asd_jax import atomic  # noqa: E402

# Okabe-Ito, in an order where neighbours contrast (black first is kept for thresholds and references).
BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#999999"
CYCLE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, YELLOW, BLACK)
LINESTYLES = ("-", "--", "-.", ":")

NORMAL, ANOMALY = BLUE, VERMILLION
SOURCE, TARGET = BLUE, ORANGE
TRAIN, SMOTE = GREY, PURPLE
THRESHOLD = BLACK

DPI = 100
RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7.5, "xtick.labelsize": 8,
      "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.4,
      "legend.frameon": False, "figure.dpi": DPI, "savefig.dpi": DPI}


def color(i: int) -> str:
  """The i-th colour of the cycle (wraps)."""
  return CYCLE[i % len(CYCLE)]


def line_style(i: int) -> tuple[str, str]:
  """(colour, line style) of the i-th curve: colours first, then the next dash pattern."""
  return CYCLE[i % len(CYCLE)], LINESTYLES[(i // len(CYCLE)) % len(LINESTYLES)]


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
  """Decorator: `draw` runs inside the report's matplotlib settings (fonts, spines, dpi are read when each
  artist is made, so the whole drawing must run inside them)."""

  @functools.wraps(draw)
  def wrapper(*args, **kwargs):
    with matplotlib.rc_context(RC):
      return draw(*args, **kwargs)

  return wrapper


def figure(width_in: float, height_in: float, *, layout: str | None = "constrained") -> Figure:
  """A new figure (inches) drawn by the Agg canvas, laid out by matplotlib's constrained layout (`layout=None`:
  the caller places the axes; for grids of many panels, where constrained layout is most of the drawing time)."""
  fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def png_bytes(fig: Figure, *, colors: int = 256) -> bytes:
  """The figure as PNG bytes on white, palette-reduced to `colors` colours (0 keeps full RGB)."""
  with matplotlib.rc_context(RC):
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout runs here
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
  image = image.convert("RGB")
  if colors:
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
  out = io.BytesIO()
  image.save(out, format="PNG", optimize=True)
  return out.getvalue()


def save_png(fig: Figure, path: str, *, colors: int = 256) -> str:
  """Writes the figure to `path` (atomic: a temporary file beside it, then renamed); returns `path`."""
  data = png_bytes(fig, colors=colors)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  atomic.write_bytes(path, data)
  return path
