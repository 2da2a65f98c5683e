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
