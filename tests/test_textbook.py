"""The book's numbers, exactly: the apple graphs of chapter 5."""

from __future__ import annotations

import pytest

import graphc


def test_buy_apple(models):
    program = graphc.compile_file(models / "apple.graph")
    assert program.forward()["price"] == pytest.approx(220, rel=1e-12)
    grads = program.backward()
    assert grads["apple"] == pytest.approx(2.2, rel=1e-12)
    assert grads["apple_num"] == pytest.approx(110, rel=1e-12)
    assert grads["tax"] == pytest.approx(200, rel=1e-12)


def test_buy_apple_orange(models):
    program = graphc.compile_file(models / "apple_orange.graph")
    assert program.forward()["price"] == pytest.approx(715, rel=1e-12)
    grads = program.backward()
    expected = {"apple": 2.2, "apple_num": 110, "orange": 3.3, "orange_num": 165, "tax": 650}
    for name, value in expected.items():
        assert grads[name] == pytest.approx(value, rel=1e-12), name


def _exactly(value: float):
    """The book's number, to 1e-12 (absolute and relative)."""
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def test_buy_apple_every_node(models):
    """Figure 5-16: forward values and every gradient on the graph, not only the inputs'."""
    program = graphc.compile_file(models / "apple.graph")
    program.forward()
    program.backward()
    assert {k: float(v) for k, v in program.values.items()} == {
        "apple": _exactly(100),
        "apple_num": _exactly(2),
        "tax": _exactly(1.1),
        "apple_price": _exactly(200),
        "price": _exactly(220),
    }
    assert {k: float(v) for k, v in program.gradients.items()} == {
        "price": 1.0,
        "apple_price": _exactly(1.1),
        "tax": _exactly(200),
        "apple": _exactly(2.2),
        "apple_num": _exactly(110),
    }


def test_buy_apple_orange_every_node(models):
    """Figure 5-17: the add node passes 1.1 to both branches unchanged."""
    program = graphc.compile_file(models / "apple_orange.graph")
    program.forward()
    grads = program.backward()
    assert {k: float(v) for k, v in program.values.items()} == {
        "apple": _exactly(100),
        "apple_num": _exactly(2),
        "orange": _exactly(150),
        "orange_num": _exactly(3),
        "tax": _exactly(1.1),
        "apple_price": _exactly(200),
        "orange_price": _exactly(450),
        "all_price": _exactly(650),
        "price": _exactly(715),
    }
    assert {k: float(v) for k, v in program.gradients.items()} == {
        "price": 1.0,
        "all_price": _exactly(1.1),
        "tax": _exactly(650),
        "apple_price": _exactly(1.1),
        "orange_price": _exactly(1.1),
        "apple": _exactly(2.2),
        "apple_num": _exactly(110),
        "orange": _exactly(3.3),
        "orange_num": _exactly(165),
    }
    assert list(grads) == ["apple", "apple_num", "orange", "orange_num", "tax"]


def test_buy_apple_through_the_command_line(models, capsys):
    import json

    from graphc.cli import main

    assert main(["run", str(models / "apple_orange.graph"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outputs"] == {"price": _exactly(715)}
    assert data["grads"] == {
        "apple": _exactly(2.2),
        "apple_num": _exactly(110),
        "orange": _exactly(3.3),
        "orange_num": _exactly(165),
        "tax": _exactly(650),
    }
