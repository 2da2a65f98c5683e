"""graphc check's summary table: graphc's own formatting, byte for byte what
tabulate's "simple" format prints (which it replaced for speed on large graphs)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tabulate import tabulate

from graphc.commands.check import text_table

HEADERS = ("value", "op", "shape", "dtype", "params")
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(\.[A-Za-z0-9_]{1,4})?", fullmatch=True) | st.sampled_from(
    ["nan", "inf", "NaN", "Infinity", "x"]
)
cells = st.sampled_from(["", "input", "mul", "[]", "[N, 784]", "f64", "f32", "1,234 (W1, b1)", "7 (w)", "param"])
rows = st.lists(st.tuples(names, cells, cells, cells, cells), max_size=8)


@given(rows)
def test_the_table_is_tabulates(table_rows):
    assert text_table(table_rows, HEADERS) == tabulate(table_rows, headers=HEADERS, tablefmt="simple")


def test_a_column_of_numbers_is_right_aligned_as_tabulate_does():
    table_rows = [("nan", "input", "[]", "f64", ""), ("inf", "mul", "[]", "f64", "")]
    assert text_table(table_rows, HEADERS).splitlines()[2] == "    nan  input  []       f64"
