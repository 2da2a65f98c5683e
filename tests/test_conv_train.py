"""The book's SimpleConvNet (models/simple_conv_net.graph) learns MNIST: a short run of
Adam, as the book's chapter 7 trains it, each epoch measured on a sample, the end on
the whole test set."""

from __future__ import annotations

import pytest

import graphc
from graphc.train import Trainer, TrainOptions, load_data


@pytest.mark.slow
def test_a_short_run_of_simple_conv_net_learns(models):
    program = graphc.compile_file(models / "simple_conv_net.graph", dtype="float32", seed=0)
    data = load_data("mnist", program)
    options = TrainOptions(iters=300, optimizer="adam", lr=0.001, seed=0, eval_sample=1000)
    result = Trainer(program, data, options).run()
    assert result.iteration == 300
    assert result.losses[:20].mean() > 2.0  # it starts at chance, ln 10
    assert result.losses[-50:].mean() < 0.5
    assert result.test_acc is not None and result.test_acc >= 0.93  # on all 10,000 test images
