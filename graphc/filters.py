"""A convolution's filters as a picture, the book's figure 7-24
(`graphc eval --filters OUT.png`).

Filters W [FN, C, FH, FW] are drawn as a grid of grayscale tiles, one per
filter and channel, each scaled to its own range: its smallest weight black,
its largest white (a tile of equal weights mid-grey). With one channel, as
for MNIST, the FN tiles fill rows of 8, as the book's `filter_show` lays them
out; with C channels each row is one filter, its channels side by side, so
that nothing is averaged away. White gaps separate the tiles; there are no
axes.

The image is built here pixel by pixel -- each weight a whole square of
pixels -- and only encoded as PNG by matplotlib, so a tile's pixels are
exactly its scaled weights (to 8 bits), whatever the screen or DPI.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from graphc.errors import GraphcError, Span, did_you_mean
from graphc.ir import InputDecl, OpNode, ParamDecl
from graphc.program import Program

COLUMNS = 8  # tiles a row when the filters have one channel, as the book's filter_show
TILE = 40  # pixels, about, a tile's longer side: each weight a square of TILE // max(FH, FW)
GAP = 4  # pixels of white between the tiles and around them
MAX_PIXELS = 2**25  # a picture larger than this is refused: nobody reads 4,096 tiles of filters
FILTERS = "[FN, C, FH, FW]"


@dataclass(frozen=True)
class Layout:
    """Where each tile goes: filter f's channel c is tile f * channels + c, in rows of `columns`."""

    filters: int
    channels: int
    height: int  # a filter's, in weights
    width: int
    zoom: int  # pixels a weight, across and down
    columns: int

    @property
    def tiles(self) -> int:
        return self.filters * self.channels

    @property
    def rows(self) -> int:
        return -(-self.tiles // self.columns)

    @property
    def size(self) -> tuple[int, int]:
        """The picture's (height, width) in pixels."""
        return (
            self.rows * (self.height * self.zoom + GAP) + GAP,
            self.columns * (self.width * self.zoom + GAP) + GAP,
        )

    def origin(self, tile: int) -> tuple[int, int]:
        """The top-left pixel of a tile."""
        row, column = divmod(tile, self.columns)
        return GAP + row * (self.height * self.zoom + GAP), GAP + column * (self.width * self.zoom + GAP)


def layout(shape: Sequence[int]) -> Layout:
    filters, channels, height, width = shape
    zoom = max(1, TILE // max(height, width))
    columns = min(COLUMNS, filters) if channels == 1 else channels
    return Layout(filters, channels, height, width, zoom, columns)


def scaled(tile: np.ndarray) -> np.ndarray:
    """A tile's weights from its smallest (0) to its largest (1); all 0.5 if they are equal.
    Divided by the largest magnitude first, so that no difference overflows (weights of ±1e308)."""
    tile = tile.astype(np.float64)
    largest = float(np.abs(tile).max())
    if largest > 0:
        tile = tile / largest
    low, high = float(tile.min()), float(tile.max())
    if high == low:
        return np.full(tile.shape, 0.5)
    return (tile - low) / (high - low)


def filters_image(weights: np.ndarray) -> np.ndarray:
    """The picture as 8-bit grey levels [height, width]: white ground, one tile per filter and channel."""
    grid = layout(weights.shape)
    image = np.full(grid.size, 255, np.uint8)
    tile_height, tile_width = grid.height * grid.zoom, grid.width * grid.zoom
    for f in range(grid.filters):
        for c in range(grid.channels):
            grey = np.round(scaled(weights[f, c]) * 255).astype(np.uint8)
            top, left = grid.origin(f * grid.channels + c)
            pixels = np.repeat(np.repeat(grey, grid.zoom, axis=0), grid.zoom, axis=1)
            image[top : top + tile_height, left : left + tile_width] = pixels
    return image


def filters_png(weights: np.ndarray, name: str, where: str) -> bytes:
    """The filters `name` as a PNG; `where` (the weights' file) is where a NaN is blamed."""
    bad = np.flatnonzero(~np.isfinite(weights).reshape(len(weights), -1).all(axis=1))
    if bad.size:
        raise GraphcError(
            f"cannot draw the filters `{name}`: filter {bad[0]} holds NaN or inf "
            f"({bad.size} of {len(weights)} filters do)",
            where=where,
            hint="the weights diverged: train again with a smaller --lr",
            code="E508",
        )
    height, width = layout(weights.shape).size
    if height * width > MAX_PIXELS:
        raise GraphcError(
            f"cannot draw the filters `{name}`: {weights.shape[0]:,} filters of {weights.shape[1]:,} channels "
            f"make a picture of {width:,} × {height:,} pixels, more than graphc draws ({MAX_PIXELS:,})",
            where=where,
            code="E508",
        )
    # matplotlib is heavy: imported only here. An RGB array is written as it is, pixel for pixel.
    from matplotlib.image import imsave

    grey = filters_image(weights)
    png = io.BytesIO()
    imsave(png, np.stack([grey, grey, grey], axis=-1), format="png")
    return png.getvalue()


def describe(weights: np.ndarray, name: str) -> str:
    """`30 filters 5×5 of W1` (`, 3 channels each` when there are more than one)."""
    filters, channels, height, width = weights.shape
    text = f"{filters} filter{'s' * (filters != 1)} {height}×{width} of `{name}`"
    return text + (f", {channels} channels each" if channels > 1 else "")


# --- which param ------------------------------------------------------------------


def first_filters(program: Program) -> str | None:
    """The first 4-D param that an op (conv2d) reads as its weights, in plan order."""
    decls = program.ir.decls
    for name in program.checked.order:
        node = decls[name]
        if not isinstance(node, OpNode):
            continue
        for operand, arg in zip(node.op.operands, node.args):
            if operand in node.op.weights and isinstance(decls[arg], ParamDecl) and program.types[arg].ndim == 4:
                return arg
    return None


def choose_filters(program: Program, name: str | None, where: Span | None) -> str:
    """The param --filters draws: `name` (--filters-param, at `where` on the
    command line) or the first convolution's filters."""
    if name is None:
        found = first_filters(program)
        if found is None:
            four_d = [p.name for p in program.ir.params() if program.types[p.name].ndim == 4]
            raise GraphcError(
                f"graph `{program.name}` has no convolution filters to draw: no op reads a 4-D param as its filters",
                program.ir.span,
                f"--filters-param {four_d[0]} draws `{four_d[0]}`"
                if four_d
                else f"filters are a param {FILTERS} that conv2d reads",
                code="E508",
            )
        return found
    decl = program.ir.decls.get(name)
    if not isinstance(decl, ParamDecl):
        if decl is None:
            message = f"no param named `{name}` in graph `{program.name}`"
            hint = did_you_mean(name, program.param_names)
            raise GraphcError(
                message, where, hint or f"its params: {', '.join(program.param_names) or 'none'}", code="E405"
            )
        if isinstance(decl, OpNode):
            kind = f"computed by {decl.op.name}"
        else:
            kind = "an input" if isinstance(decl, InputDecl) else "a const"
        raise GraphcError(
            f"`{name}` is {kind}, not a param: --filters draws learned filters {FILTERS}",
            where,
            notes=[(f"`{name}` is declared here", decl.span)],
            code="E508",
        )
    t = program.types[name]
    if t.ndim != 4:
        raise GraphcError(
            f"param `{name}` is {t}, not filters {FILTERS}",
            where,
            f"--filters draws a 4-D param, as conv2d reads: {FILTERS}",
            notes=[(f"`{name}` is declared here", decl.span)],
            code="E508",
        )
    return name


def check_target(path: str, where: Span | None = None) -> None:
    """--filters writes a PNG: the name must say so, and the file must be writable (checked before any work)."""
    from graphc.fileio import probe_write

    if not path.lower().endswith(".png"):
        raise GraphcError(
            f"--filters writes a PNG image: `{path}` does not end in .png",
            where,
            "e.g. `--filters filters.png`",
            code="E507",
        )
    probe_write(path)
