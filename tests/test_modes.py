"""Train and eval modes: a plan's mode, the run's seeded generator (reruns
bit-identical, seeds differing), batchnorm's running statistics as state
(updated once per training step by the training plan only, never by the
optimizer, saved in checkpoints and restored), and the commands' --mode."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import graphc
from graphc.checkpoint import load_weights, read_checkpoint, save_checkpoint
from graphc.cli import main
from graphc.plan import make_inference_plan, make_plan
from graphc.train import MinibatchDraws, Trainer, TrainOptions, prepare_data


def source(block: str) -> str:
    return textwrap.dedent(block).lstrip("\n")


# batchnorm straight on the images: the running statistics then depend on the
# minibatches alone, so a test can work them out from the draws.
NET = source("""
    graph net {
        dim N = 5
        input x: f64[N, 784] = uniform(0, 1) from images
        input t: f64[N, 10] = onehot from labels
        param gamma: [784] = ones
        param beta: [784] = zeros
        param W: [784, 10] = normal(0.01)
        param b: [10] = zeros
        x -> batchnorm(gamma, beta, momentum=0.8) as bn -> dropout(ratio=0.25) as drop -> affine(W, b) -> y
        loss = softmax_loss(y, t)
        output loss
    }
""")


def program(**kwargs) -> graphc.Program:
    return graphc.compile_source(NET, "net.graph", **kwargs)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 28, 28)), rng.integers(0, 10, 300)
    return prepare_data(program(), (x, y), (x[:100], y[:100]), name="noise")


def params_of(p: graphc.Program) -> dict[str, bytes]:
    return {name: p.params[name].tobytes() for name in p.param_names}


def state_of(p: graphc.Program) -> dict[str, bytes]:
    return {name: value.tobytes() for name, value in p.state.items()}


# --- plans have a mode ------------------------------------------------------------


def test_plans_carry_their_mode():
    p = program()
    assert p.mode == "train" and p.plan.mode == "train"
    assert make_plan(p.checked, p.types, mode="eval").mode == "eval"
    assert make_inference_plan(p.checked, p.types, ("y",)).mode == "eval"  # predictions
    assert program(mode="eval").plan.mode == "eval"
    step = next(s for s in p.plan.forward if s.out == "bn")
    assert step.state == ("bn.running_mean", "bn.running_var")


# --- the run's generator ------------------------------------------------------------


def test_reruns_with_a_seed_are_bit_identical_and_seeds_differ():
    runs = []
    for seed in (3, 3, 4):
        p = program(seed=seed)
        losses = [p.forward()["loss"] for _ in range(3)]
        grads = p.backward()
        runs.append((losses, {k: v.tobytes() for k, v in grads.items()}, state_of(p)))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_the_command_line_reruns_bit_identically(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    outputs = []
    for seed in ("1", "1", "2"):
        assert main(["run", str(path), "--seed", seed, "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert outputs[0]["outputs"] != outputs[2]["outputs"]


def test_run_in_eval_mode_scales_by_what_dropout_keeps(capsys, tmp_path):
    path = tmp_path / "d.graph"
    path.write_text(
        source("""
            graph d {
                input x = [1.0, 2.0, 4.0]
                y = dropout(x, ratio=0.25)
                output y
            }
        """)
    )
    assert main(["run", str(path), "--mode", "eval", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outputs"]["y"] == [0.75, 1.5, 3.0]
    assert result["grads"]["x"] == [0.75, 0.75, 0.75]


def test_an_unknown_mode_on_the_command_line(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    assert main(["run", str(path), "--mode", "predict"]) == 2
    assert "argument --mode: invalid choice: 'predict' (choose from" in capsys.readouterr().err


def test_gradcheck_command_in_both_modes(capsys, tmp_path):
    path = tmp_path / "small.graph"
    path.write_text(NET.replace("784", "6").replace("dim N = 5", "dim N = 4"))
    for mode in ("train", "eval"):
        assert main(["gradcheck", str(path), "--mode", mode, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["ok"] and [t["name"] for t in result["tensors"]] == ["x", "gamma", "beta", "W", "b"]


def test_compile_shows_each_modes_plan(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    assert main(["compile", str(path)]) == 0
    train = capsys.readouterr().out
    assert main(["compile", str(path), "--mode", "eval"]) == 0
    predict = capsys.readouterr().out
    assert "d_bn = d_drop * drop.mask" in train and "saves drop.mask" in train
    assert "d_bn = d_drop * (1.0 - 0.25)" in predict and "drop.mask" not in predict
    assert main(["compile", str(path), "--mode", "eval", "--emit", "python"]) == 0
    assert "rng=None" not in capsys.readouterr().out


def test_time_and_draw_take_a_mode(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    for mode in ("train", "eval"):
        assert main(["time", str(path), "--iters", "2", "--warmup", "0", "--mode", mode, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["nodes"]
        assert main(["draw", str(path), "-o", str(tmp_path / "n.dot"), "--plan", "backward", "--mode", mode]) == 0
    assert "drop.mask" not in (tmp_path / "n.dot").read_text()  # the eval plan's, drawn last


# --- state, through training ----------------------------------------------------------


def expected_running_statistics(data, iters: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The book's running statistics over the minibatches training draws, one update per step."""
    draws = MinibatchDraws(np.random.default_rng(seed), data.train_size, batch)
    mean, var = np.zeros(784), np.zeros(784)
    for i in range(iters):
        x = data.x_train[draws.indices(i)]
        mu = x.mean(axis=0)
        mean = 0.8 * mean + (1 - 0.8) * mu
        var = 0.8 * var + (1 - 0.8) * np.mean((x - mu) ** 2, axis=0)
    return mean, var


@pytest.mark.parametrize("engine", ["interpreter", "codegen"])
def test_running_statistics_update_once_per_step_never_in_eval_and_never_by_the_optimizer(data, engine):
    p = program()
    options = TrainOptions(iters=7, batch=100, optimizer="adam", engine=engine, evaluate=True)
    trainer = Trainer(p, data, options)
    assert trainer.optimizer.names == p.param_names  # the optimizer knows params only
    trainer.run()
    assert trainer.engine == engine
    # Accuracy was measured (in eval mode) after every epoch; the statistics are
    # those of the 7 training steps alone.
    assert len(trainer.history) == 3
    mean, var = expected_running_statistics(data, 7, 100, seed=0)
    np.testing.assert_allclose(p.state["bn.running_mean"], mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p.state["bn.running_var"], var, rtol=1e-13, atol=1e-15)


def test_both_engines_train_bit_identically(data):
    results = []
    for engine in ("interpreter", "codegen"):
        p = program(seed=5)
        Trainer(p, data, TrainOptions(iters=9, batch=20, seed=5, engine=engine, evaluate=False)).run()
        results.append((params_of(p), state_of(p), p.rng.bit_generator.state))
    assert results[0] == results[1]


def test_predictions_use_the_running_statistics(data):
    p = program()
    Trainer(p, data, TrainOptions(iters=5, batch=20, evaluate=False)).run()
    x = data.x_test[:10]
    predict = program(mode="eval")
    for name in p.param_names:
        predict.params[name] = p.params[name]
    for name in p.state:
        predict.state[name][...] = p.state[name]
    expected = predict.forward(x=x, t=np.zeros(10, np.int64))
    np.testing.assert_array_equal(p.evaluate(("y",), {"x": x})["y"], predict.values["y"], strict=True)
    assert np.isfinite(expected["loss"])


# --- state in checkpoints ------------------------------------------------------------------


def test_checkpoints_hold_the_state_and_weights_restore_it(data, tmp_path):
    p = program()
    Trainer(p, data, TrainOptions(iters=4, batch=20, evaluate=False)).run(checkpoint=tmp_path / "w.npz")
    checkpoint = read_checkpoint(tmp_path / "w.npz", program())
    assert set(checkpoint.state) == {"bn.running_mean", "bn.running_var"}
    assert set(checkpoint.params) == set(p.param_names)  # state is not among the params
    fresh = program(mode="eval")
    load_weights(fresh, tmp_path / "w.npz")
    assert state_of(fresh) == state_of(p)


def test_resume_continues_bit_for_bit_with_state_and_dropout(data, tmp_path):
    options = dict(batch=20, optimizer="momentum", evaluate=False)
    straight = program()
    Trainer(straight, data, TrainOptions(iters=30, **options)).run()

    first = program()
    Trainer(first, data, TrainOptions(iters=17, **options)).run(checkpoint=tmp_path / "w.npz")
    second = program(seed=99)  # params, state and dropout's generator come from the checkpoint
    trainer = Trainer(second, data, TrainOptions(iters=30, **options), resume=read_checkpoint(tmp_path / "w.npz"))
    trainer.run()
    assert params_of(second) == params_of(straight)
    assert state_of(second) == state_of(straight)


def test_a_checkpoint_without_the_state_a_graph_keeps_is_refused(tmp_path):
    save_checkpoint(tmp_path / "w.npz", program())
    with np.load(tmp_path / "w.npz") as npz:
        entries = {key: npz[key] for key in npz.files if key != "state/bn.running_mean"}
    np.savez(tmp_path / "w.npz", **entries)  # as a file damaged, or edited by hand, would be
    with pytest.raises(graphc.GraphcError) as info:
        load_weights(program(), tmp_path / "w.npz")
    assert info.value.render() == (
        f"{tmp_path / 'w.npz'}: error[E706]: no tensor for state `bn.running_mean` of graph `net`\n"
        "hint: the checkpoint was saved without the running statistics this graph keeps"
    )


def test_state_entries_that_do_not_fit_are_refused(tmp_path):
    p = program()
    p.state["bn.running_var"] = np.zeros(3)  # as a damaged file would hold it
    save_checkpoint(tmp_path / "w.npz", p)
    with pytest.raises(graphc.GraphcError) as info:
        read_checkpoint(tmp_path / "w.npz", program())
    assert info.value.render() == (
        f"{tmp_path / 'w.npz'}: error[E707]: state `bn.running_var` is float64[3], but graph `net` keeps f64[784]"
    )


# --- the summary shows state apart from params ------------------------------------------


def test_check_lists_state_apart_from_params(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "state (not trained)" in out
    state = out[out.index("state (not trained)") :]
    assert "bn.running_mean" in state and "bn.running_var" in state


def test_diagrams_draw_the_gradients_of_the_masks_the_run_drew():
    p = program(seed=1)
    p.forward()
    p.backward()
    state = state_of(p)
    from graphc.draw import edge_gradients

    shares = edge_gradients(p)  # a second pass, which must draw the masks the first drew
    np.testing.assert_array_equal(shares[("drop", 0)], p.gradients["bn"], strict=True)
    np.testing.assert_array_equal(shares[("bn", 1)], p.gradients["gamma"], strict=True)
    assert state_of(p) == state  # and leave the running statistics alone


def test_plan_json_names_the_mode_and_the_state(capsys, tmp_path):
    path = tmp_path / "net.graph"
    path.write_text(NET)
    for mode in ("train", "eval"):
        assert main(["compile", str(path), "--emit", "json", "--mode", mode]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["mode"] == mode
        bn = plan["forward"][0]
        assert (bn["out"], bn["state"], bn["updates"]) == ("bn", ["bn.running_mean", "bn.running_var"], mode == "train")
        assert "state" not in plan["forward"][1]
    plain = tmp_path / "plain.graph"
    plain.write_text(
        NET.replace("batchnorm(gamma, beta, momentum=0.8)", "mul(gamma)").replace("dropout(ratio=0.25)", "relu")
    )
    assert main(["compile", str(plain), "--emit", "json"]) == 0
    assert "mode" not in json.loads(capsys.readouterr().out)  # where the mode changes nothing, plans do not say it
