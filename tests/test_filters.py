"""`graphc eval --filters OUT.png`: a convolution's filters as a picture (the
book's figure 7-24), read back pixel by pixel: the grid's size and layout,
each tile its own filter channel's weights scaled to 0..255, the white gaps;
which param is drawn; and every mistake as a located error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import graphc
from graphc import cli

# Tiles of the made-up graph below: zoom 40 // max(FH, FW), gaps of 4 white pixels.
GAP = 4

TWO_CONVS = """\
graph g {
    input x: f64[N, 2, 6, 6] from images
    param F: f64[3, 2, 2, 3] = normal(1)
    param c: f64[3] = zeros
    param G: f64[10, 3, 5, 4] = normal(1)
    param d: f64[10] = zeros
    param M: f64[4, 4] = ones
    first = conv2d(x, F, c)
    second = conv2d(first, G, d, pad=2)
    total = sum(second)
    m = sum(M)
    loss = add(total, m)
    output loss
}
"""

NO_CONV = """\
graph plain {
    input x: f64[N, 4]
    param W: f64[4] = normal(1)
    param K: f64[2, 1, 3, 3] = ones
    y = mul(x, W)
    total = sum(y)
    k = sum(K)
    loss = add(total, k)
    output loss
}
"""


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A scratch directory holding g.graph and plain.graph, as the working directory (messages name files so)."""
    (tmp_path / "g.graph").write_text(TWO_CONVS)
    (tmp_path / "plain.graph").write_text(NO_CONV)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def graphc_cli(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def made_up_weights(path, rng=None) -> dict[str, np.ndarray]:
    """Params of g with filters of known, distinct values; saved as a plain .npz."""
    rng = rng or np.random.default_rng(7)
    params = {
        "F": rng.normal(size=(3, 2, 2, 3)),
        "c": np.zeros(3),
        "G": rng.normal(size=(10, 3, 5, 4)),
        "d": np.zeros(10),
        "M": np.ones((4, 4)),
    }
    np.savez(path, **params)
    return params


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all(), "not grey"
    return rgb[..., 0]


def expected_tile(weights: np.ndarray, zoom: int) -> np.ndarray:
    """A filter channel scaled from its least (0) to its largest (255) weight, each weight a zoom × zoom square."""
    grey = np.round((weights - weights.min()) / (weights.max() - weights.min()) * 255)
    return np.kron(grey, np.ones((zoom, zoom))).astype(np.uint8)


def tiles_of(
    image: np.ndarray, tile_shape: tuple[int, int], rows: int, columns: int
) -> dict[tuple[int, int], np.ndarray]:
    h, w = tile_shape
    return {
        (r, c): image[GAP + r * (h + GAP) : GAP + r * (h + GAP) + h, GAP + c * (w + GAP) : GAP + c * (w + GAP) + w]
        for r in range(rows)
        for c in range(columns)
    }


def white_outside_tiles(image: np.ndarray, tile_shape: tuple[int, int], drawn: list[tuple[int, int]]) -> bool:
    mask = np.ones(image.shape, bool)
    h, w = tile_shape
    for r, c in drawn:
        mask[GAP + r * (h + GAP) : GAP + r * (h + GAP) + h, GAP + c * (w + GAP) : GAP + c * (w + GAP) + w] = False
    return bool((image[mask] == 255).all())


# --- the picture ---------------------------------------------------------------


def test_first_convolution_each_filter_a_row_of_its_channels(here, capsys):
    params = made_up_weights("w.npz")
    status, out, err = graphc_cli(capsys, "eval", "g.graph", "--weights", "w.npz", "--filters", "f.png")
    assert (status, err) == (0, "")
    # F [3, 2, 2, 3]: 3 rows of 2 channels; each weight 40 // 3 = 13 pixels square.
    zoom, tile = 13, (2 * 13, 3 * 13)
    assert out == "wrote f.png: 3 filters 2×3 of `F`, 2 channels each, g with weights w.npz, 90 × 94 pixels\n"
    image = pixels("f.png")
    assert image.shape == (3 * (26 + GAP) + GAP, 2 * (39 + GAP) + GAP) == (94, 90)
    tiles = tiles_of(image, tile, rows=3, columns=2)
    for (f, c), drawn in tiles.items():
        np.testing.assert_array_equal(drawn, expected_tile(params["F"][f, c], zoom), err_msg=f"filter {f} channel {c}")
    assert white_outside_tiles(image, tile, list(tiles))


def test_one_channel_filters_fill_rows_of_eight(here, capsys):
    (here / "one.graph").write_text(
        textwrap.dedent("""\
        graph one {
            input x: f64[N, 1, 8, 8] from images
            param K: f64[10, 1, 5, 4] = normal(1)
            param k: f64[10] = zeros
            y = conv2d(x, K, k)
            output y
        }
        """)
    )
    weights = np.random.default_rng(3).normal(size=(10, 1, 5, 4))
    weights[9, 0] = 0.25  # every weight the same: mid-grey
    np.savez("one.npz", K=weights, k=np.zeros(10))
    status, out, _ = graphc_cli(capsys, "eval", "one.graph", "--weights", "one.npz", "--filters", "one.png")
    assert status == 0
    assert out == "wrote one.png: 10 filters 5×4 of `K`, one with weights one.npz, 292 × 92 pixels\n"
    image = pixels("one.png")
    zoom, tile = 8, (40, 32)  # 40 // 5
    assert image.shape == (2 * (40 + GAP) + GAP, 8 * (32 + GAP) + GAP)
    tiles = tiles_of(image, tile, rows=2, columns=8)
    for f in range(9):
        np.testing.assert_array_equal(tiles[divmod(f, 8)], expected_tile(weights[f, 0], zoom), err_msg=f"filter {f}")
    assert (tiles[(1, 1)] == 128).all()
    # The second row holds two tiles; the rest of it is white.
    assert white_outside_tiles(image, tile, [(0, c) for c in range(8)] + [(1, 0), (1, 1)])


def test_filters_param_picks_another_and_json_says_what_was_drawn(here, capsys):
    params = made_up_weights("w.npz")
    argv = ["eval", "g.graph", "--weights", "w.npz", "--filters", "g.png", "--filters-param", "G", "--json"]
    status, out, _ = graphc_cli(capsys, *argv)
    assert status == 0
    assert json.loads(out) == {
        "graph": "g",
        "weights": "w.npz",
        "iteration": 0,
        "seed": None,
        "param": "G",
        "shape": [10, 3, 5, 4],
        "image": "g.png",
        "width": 3 * (32 + GAP) + GAP,
        "height": 10 * (40 + GAP) + GAP,
    }
    image = pixels("g.png")
    assert image.shape == (444, 112)
    tiles = tiles_of(image, (40, 32), rows=10, columns=3)
    for (f, c), drawn in tiles.items():
        np.testing.assert_array_equal(drawn, expected_tile(params["G"][f, c], 8))


def test_without_weights_the_initial_filters_of_the_seed(here, capsys):
    status, out, _ = graphc_cli(capsys, "eval", "g.graph", "--filters", "s.png", "--seed", "5")
    assert status == 0
    assert (
        out == "wrote s.png: 3 filters 2×3 of `F`, 2 channels each, g with initial weights (--seed 5), 90 × 94 pixels\n"
    )
    initial = graphc.compile_file("g.graph", seed=5).params["F"]
    tiles = tiles_of(pixels("s.png"), (26, 39), rows=3, columns=2)
    for (f, c), drawn in tiles.items():
        np.testing.assert_array_equal(drawn, expected_tile(initial[f, c], 13))
    graphc_cli(capsys, "eval", "g.graph", "--filters", "s6.png", "--seed", "6")
    assert not np.array_equal(pixels("s.png"), pixels("s6.png"))


def test_trained_checkpoint_in_float32(here, capsys, models):
    from graphc.checkpoint import save_checkpoint

    program = graphc.compile_file(models / "simple_conv_net.graph", dtype="float32", seed=1)
    save_checkpoint(here / "cnn.npz", program, iteration=12, data="mnist", batch=100, seed=1)
    status, out, _ = graphc_cli(
        capsys, "eval", models / "simple_conv_net.graph", "--weights", "cnn.npz", "--filters", "w1.png"
    )
    assert status == 0
    assert out.startswith(
        "wrote w1.png: 30 filters 5×5 of `W1`, simple_conv_net with weights cnn.npz, 356 × 180 pixels"
    )
    tiles = tiles_of(pixels("w1.png"), (40, 40), rows=4, columns=8)
    for f in range(30):
        np.testing.assert_array_equal(
            tiles[divmod(f, 8)], expected_tile(program.params["W1"][f, 0].astype(np.float64), 8)
        )


def test_matplotlib_is_imported_only_to_draw():
    code = "import sys, graphc.cli, graphc.commands.eval, graphc.filters; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "False\n"


# --- mistakes ------------------------------------------------------------------


def error_of(capsys, *argv) -> str:
    status, out, err = graphc_cli(capsys, *argv)
    assert (status, out) == (2, "")
    return err


def test_a_graph_without_a_convolution(here, capsys):
    assert error_of(capsys, "eval", "plain.graph", "--filters", "f.png") == textwrap.dedent("""\
        plain.graph:1:7: error[E508]: graph `plain` has no convolution filters to draw: no op reads a 4-D param as its filters
         1 | graph plain {
           |       ^^^^^
        hint: --filters-param K draws `K`
        """)
    (here / "plainer.graph").write_text("graph plainer {\n    input x: f64[3]\n    y = relu(x)\n    output y\n}\n")
    assert error_of(capsys, "eval", "plainer.graph", "--filters", "f.png").endswith(
        "hint: filters are a param [FN, C, FH, FW] that conv2d reads\n"
    )
    assert not (here / "f.png").exists()


def test_filters_param_that_is_no_param(here, capsys):
    made_up_weights("w.npz")
    base = ["eval", "g.graph", "--weights", "w.npz", "--filters", "f.png", "--filters-param"]
    assert error_of(capsys, *base, "Gg") == textwrap.dedent("""\
        <command line>:1:17: error[E405]: no param named `Gg` in graph `g`
         1 | --filters-param Gg
           |                 ^^
        hint: did you mean `G`?
        """)
    assert error_of(capsys, *base, "Q") == textwrap.dedent("""\
        <command line>:1:17: error[E405]: no param named `Q` in graph `g`
         1 | --filters-param Q
           |                 ^
        hint: its params: F, c, G, d, M
        """)
    assert error_of(capsys, *base, "x") == textwrap.dedent("""\
        <command line>:1:17: error[E508]: `x` is an input, not a param: --filters draws learned filters [FN, C, FH, FW]
         1 | --filters-param x
           |                 ^
        g.graph:2:11: note: `x` is declared here
         2 |     input x: f64[N, 2, 6, 6] from images
           |           ^
        """)
    assert error_of(capsys, *base, "first") == textwrap.dedent("""\
        <command line>:1:17: error[E508]: `first` is computed by conv2d, not a param: --filters draws learned filters [FN, C, FH, FW]
         1 | --filters-param first
           |                 ^^^^^
        g.graph:8:5: note: `first` is declared here
         8 |     first = conv2d(x, F, c)
           |     ^^^^^
        """)
    assert not (here / "f.png").exists()


def test_filters_param_that_is_not_4d(here, capsys):
    made_up_weights("w.npz")
    argv = ["eval", "g.graph", "--weights", "w.npz", "--filters", "f.png", "--filters-param", "M"]
    assert error_of(capsys, *argv) == textwrap.dedent("""\
        <command line>:1:17: error[E508]: param `M` is f64[4, 4], not filters [FN, C, FH, FW]
         1 | --filters-param M
           |                 ^
        g.graph:7:11: note: `M` is declared here
         7 |     param M: f64[4, 4] = ones
           |           ^
        hint: --filters draws a 4-D param, as conv2d reads: [FN, C, FH, FW]
        """)


def test_output_that_cannot_be_written(here, capsys):
    assert error_of(capsys, "eval", "g.graph", "--filters", "f.jpg") == textwrap.dedent("""\
        <command line>:1:11: error[E507]: --filters writes a PNG image: `f.jpg` does not end in .png
         1 | --filters f.jpg
           |           ^^^^^
        hint: e.g. `--filters filters.png`
        """)
    assert error_of(capsys, "eval", "g.graph", "--filters", "no/f.png") == textwrap.dedent("""\
        no/f.png: error[E604]: cannot write: no such directory
        hint: create `no` first
        """)
    (here / "d.png").mkdir()
    assert error_of(capsys, "eval", "g.graph", "--filters", "d.png") == textwrap.dedent("""\
        d.png: error[E602]: is a directory
        hint: give a file name
        """)


def test_nan_filters_leave_the_previous_picture(here, capsys):
    params = made_up_weights("w.npz")
    assert graphc_cli(capsys, "eval", "g.graph", "--weights", "w.npz", "--filters", "f.png")[0] == 0
    before = (here / "f.png").read_bytes()
    params["F"][1, 1, 0, 2] = np.nan
    params["F"][2, 0, 0, 0] = np.inf
    np.savez("bad.npz", **params)
    assert error_of(capsys, "eval", "g.graph", "--weights", "bad.npz", "--filters", "f.png") == textwrap.dedent("""\
        bad.npz: error[E508]: cannot draw the filters `F`: filter 1 holds NaN or inf (2 of 3 filters do)
        hint: the weights diverged: train again with a smaller --lr
        """)
    assert (here / "f.png").read_bytes() == before
    assert sorted(p.name for p in here.iterdir()) == ["bad.npz", "f.png", "g.graph", "plain.graph", "w.npz"]


def test_filters_param_needs_filters_and_measuring_needs_weights(here, capsys):
    assert error_of(capsys, "eval", "g.graph", "--weights", "w.npz", "--filters-param", "G") == textwrap.dedent("""\
        <command line>:1:17: error[E505]: --filters-param names the param --filters draws: give --filters OUT.png too
         1 | --filters-param G
           |                 ^
        """)
    assert error_of(capsys, "eval", "g.graph") == textwrap.dedent("""\
        graphc: error[E505]: graphc eval measures trained weights: give --weights W.npz
        hint: a checkpoint from `graphc train --save`; without weights, only --filters OUT.png draws (the initial filters)
        """)


def test_wrong_weights_are_refused_before_anything_is_written(here, capsys):
    np.savez("other.npz", F=np.zeros((3, 2, 2, 2)))
    err = error_of(capsys, "eval", "g.graph", "--weights", "other.npz", "--filters", "f.png")
    assert err.startswith("other.npz: error[")
    assert not (here / "f.png").exists()


def test_huge_and_tiny_weights_scale_without_overflow(here, capsys):
    params = made_up_weights("w.npz")
    params["F"][0, 0] = [[1e308, -1e308, 0.0], [5e307, -5e307, 1e308]]
    params["F"][0, 1] = [[5e-324, 0.0, 0.0], [0.0, 0.0, 0.0]]  # the least subnormal
    np.savez("w.npz", **params)
    assert graphc_cli(capsys, "eval", "g.graph", "--weights", "w.npz", "--filters", "f.png")[0] == 0
    tiles = tiles_of(pixels("f.png"), (26, 39), rows=3, columns=2)
    zoom = np.ones((13, 13))
    np.testing.assert_array_equal(tiles[(0, 0)], np.kron([[255, 0, 128], [191, 64, 255]], zoom))
    np.testing.assert_array_equal(tiles[(0, 1)], np.kron([[255, 0, 0], [0, 0, 0]], zoom))
