"""Plans: forward in a deterministic topological order, backward pruned to what
needs a gradient, fan-out gradients accumulated, and the printed and JSON forms."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from graphc.cli import main
from graphc.compiler import front_end, front_end_file
from graphc.plan import Plan, make_inference_plan, make_plan

MODELS = Path(__file__).resolve().parent.parent / "models"


def plan_of(source: str, **kwargs) -> Plan:
    [graph] = front_end(textwrap.dedent(source).lstrip("\n"), "p.graph")
    return make_plan(graph.checked, graph.types, **kwargs)


def forward_outs(plan: Plan) -> list[str]:
    return [step.out for step in plan.forward]


def backward_writes(plan: Plan) -> list[tuple[str, str, bool]]:
    return [(step.node, w.target, w.accumulate) for step in plan.backward for w in step.writes]


def emit(argv: list[str], capsys) -> str:
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


# --- forward -----------------------------------------------------------------

ORDER = """
    graph order {
        input x = 1
        c = relu(b)
        b = relu(a)
        a = relu(x)
        d = relu(x)
        e = add(c, d)
        output e
    }
"""


def test_forward_is_topological_with_ties_broken_by_source_order():
    # a, b, c must run in that order whatever the source says. d is ready as
    # early as a, but among the ready nodes the earliest in the source runs
    # first: a (line 5) before d (line 6), then b (line 4), then c (line 3).
    assert forward_outs(plan_of(ORDER)) == ["a", "b", "c", "d", "e"]


IN_ORDER = """
    graph order {
        input x = 1
        d = relu(x)
        a = relu(x)
        b = relu(a)
        c = relu(b)
        e = add(c, d)
        output e
    }
"""


@pytest.mark.parametrize("source", [ORDER, IN_ORDER])
def test_the_checked_order_is_networkx_lexicographic_sort(source):
    # A file in order is taken as it stands (no sort); one out of order is
    # sorted by networkx. Either way the order is the same as sorting gives.
    import networkx as nx

    [graph] = front_end(textwrap.dedent(source).lstrip("\n"), "p.graph")
    ir = graph.checked.ir
    expected = nx.lexicographical_topological_sort(graph.checked.graph, key=ir.order.__getitem__)
    assert graph.checked.order == tuple(expected)


def test_independent_nodes_keep_source_order():
    plan = plan_of("""
        graph g {
            input x = 1
            p = relu(x)
            q = sigmoid(x)
            r = relu(x)
            s = add(q, r)
            t = add(s, p)
            output t
        }
    """)
    assert forward_outs(plan) == ["p", "q", "r", "s", "t"]


def test_plans_are_deterministic():
    texts = {plan_of(ORDER).text() for _ in range(5)}
    assert len(texts) == 1
    path = MODELS / "two_layer_net.graph"
    [a], [b] = front_end_file(path), front_end_file(path)
    assert make_plan(a.checked, a.types).text() == make_plan(b.checked, b.types).text()


def test_forward_frees_values_after_their_last_reader_but_keeps_outputs():
    plan = plan_of(ORDER)
    frees = {step.out: step.frees for step in plan.forward}
    assert frees == {"a": (), "b": ("a",), "c": ("b",), "d": (), "e": ("c", "d")}
    assert "e" not in {name for step in plan.forward for name in step.frees}  # the output


# --- backward ------------------------------------------------------------------

PRUNED = """
    graph g {
        input x: [2, 3]
        input t: [2, 3]
        input u: [2, 3]
        param W: [3, 3] = normal(0.1)
        param b: [3] = zeros
        const two = 2
        side = relu(u)
        h = affine(x, W, b)
        s = sigmoid(h)
        z = add(h, s)
        zz = mul(z, two)
        loss = softmax_loss(zz, t)
        output loss, side
    }
"""


def test_backward_is_pruned_to_what_reaches_the_seed():
    plan = plan_of(PRUNED)
    assert plan.seed == "loss"
    assert forward_outs(plan) == ["side", "h", "s", "z", "zz", "loss"]
    # No step for `side`, which does not reach the loss; none for labels or consts.
    assert [step.node for step in plan.backward] == ["loss", "zz", "z", "s", "h"]
    assert backward_writes(plan) == [
        ("loss", "d_zz", False),
        ("zz", "d_z", False),
        ("z", "d_h", False),
        ("z", "d_s", False),
        ("s", "d_h", True),
        ("h", "d_x", False),
        ("h", "d_W", False),
        ("h", "d_b", False),
    ]
    assert plan.wrt == ("x", "t", "u", "W", "b")
    assert plan.disconnected == ("u",)
    step = plan.backward[0]
    assert step.needs == (True, False)  # labels get no gradient


def test_backward_prunes_steps_that_lead_to_nothing_wanted():
    # Only W wanted: x's gradient is not computed.
    plan = plan_of(PRUNED, wrt=["W"])
    writes = backward_writes(plan)
    assert ("h", "d_W", False) in writes
    assert all(target != "d_x" and target != "d_b" for _, target, _ in writes)
    # Nothing wanted upstream of the sigmoid's input except through h: all steps remain.
    assert [step.node for step in plan.backward] == ["loss", "zz", "z", "s", "h"]


def test_steps_that_only_lead_to_constants_are_dropped():
    plan = plan_of("""
        graph g {
            input x = 2
            const c = 3
            k = mul(c, c)
            y = mul(x, k)
            output y
        }
    """)
    assert [step.node for step in plan.backward] == ["y"]
    assert backward_writes(plan) == [("y", "d_x", False)]
    assert plan.backward[0].needs == (True, False)
    # The forward step for k is not taped: backward never reads what it saves.
    assert [(s.out, s.taped, s.saves) for s in plan.forward] == [("k", False, ()), ("y", True, ("x", "k"))]


def test_fan_out_accumulates_and_never_adds_into_a_borrowed_gradient():
    plan = plan_of(PRUNED)
    [first] = [w for s in plan.backward if s.node == "z" for w in s.writes if w.target == "d_h"]
    [second] = [w for s in plan.backward if s.node == "s" for w in s.writes]
    assert (first.rule, first.accumulate, first.in_place) == ("d_z", False, False)
    # d_h is d_z itself (add passes its gradient through): adding into it in
    # place would corrupt d_s, so the plan says: accumulate, not in place.
    assert (second.target, second.accumulate, second.in_place) == ("d_h", True, False)


def test_fan_out_into_an_owned_buffer_is_in_place():
    plan = plan_of("""
        graph g {
            input x = 3
            input y = 4
            a = mul(x, y)
            b = mul(x, y)
            c = mul(x, y)
            s = add(a, b)
            f = add(s, c)
            output f
        }
    """)
    x_writes = [(w.accumulate, w.in_place) for s in plan.backward for w in s.writes if w.target == "d_x"]
    assert x_writes == [(False, False), (True, True), (True, True)]


def test_mul_of_a_value_with_itself_writes_its_gradient_twice():
    plan = plan_of("""
        graph g {
            input x = [1, 2]
            y = mul(x, x)
            output y
        }
    """)
    assert backward_writes(plan) == [("y", "d_x", False), ("y", "d_x", True)]
    assert [w.rule for s in plan.backward for w in s.writes] == ["d_y * x", "d_y * x"]


def test_an_operand_named_inside_the_use_is_not_an_own_saved_tensor(tmp_path, capsys):
    # Found by the fuzzer: `y`'s square saves its operand `y.square1`, the value the use names
    # inside itself; taken for one of square's own tensors, `graphc draw` and `compile --batch` failed
    # with a KeyError.
    source = """
        block k(x) {
            x -> square -> square -> out
        }
        graph g {
            param w = [1, 2]
            y = k(w)
            output y
        }
    """
    plan = plan_of(source)
    assert [(step.out, step.saves, step.own_saves()) for step in plan.forward] == [
        ("y.square1", ("w",), ()),
        ("y", ("y.square1",), ()),
    ]
    relu_plan = plan_of("graph g {\n    param w = [1, -2]\n    w -> relu -> y\n    output y\n}\n")
    assert [step.own_saves() for step in relu_plan.forward] == [(("y.mask", "mask"),)]
    path = tmp_path / "k.graph"
    path.write_text(textwrap.dedent(source))
    assert main(["draw", str(path), "-o", str(tmp_path / "steps.html")]) == 0
    assert "d_y.square1" in (tmp_path / "steps.html").read_text()
    # The memory of each step (which read the same) also failed.
    assert main(["compile", str(path), "--emit", "plan", "--batch", "3"]) == 0
    assert "peak" in capsys.readouterr().out


def test_inference_plan_runs_only_what_the_targets_need():
    [graph] = front_end(textwrap.dedent(PRUNED), "p.graph")
    plan = make_inference_plan(graph.checked, graph.types, ("h",))
    assert forward_outs(plan) == ["h"]
    assert plan.backward == () and plan.seed is None
    assert plan.inputs == ("x",) and plan.params == ("W", "b")
    assert all(not step.taped and step.saves == () for step in plan.forward)


# --- printed forms ---------------------------------------------------------------

APPLE_PLAN = """\
graph buy_apple

forward (2 steps)
  1  apple_price = mul(apple, apple_num)  f64  saves apple, apple_num
  2  price = mul(apple_price, tax)        f64  saves apple_price, tax  frees apple_price

backward from price (2 steps, seeded with d_price = 1)
  2  mul  d_apple_price = d_price * tax        reads tax
          d_tax = d_price * apple_price        reads apple_price
  1  mul  d_apple = d_apple_price * apple_num  reads apple_num
          d_apple_num = d_apple_price * apple  reads apple

gradients: d_apple, d_apple_num, d_tax
"""


def test_emit_plan_for_the_apple_graph(capsys):
    assert emit(["compile", str(MODELS / "apple.graph"), "--emit", "plan"], capsys) == APPLE_PLAN
    assert emit(["compile", str(MODELS / "apple.graph")], capsys) == APPLE_PLAN  # plan is the default


def test_emit_plan_shows_fan_out_accumulation(capsys):
    text = emit(["compile", str(MODELS / "fanout.graph")], capsys)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert lines[lines.index("backward from f (3 steps, seeded with d_f = 1)") + 1 :] == [
        "3 add d_square = d_f",
        "d_xy = d_f",
        "2 mul d_x = d_xy * y reads y",
        "d_y = d_xy * x reads x",
        "1 mul d_x += d_square * x reads x",
        "d_x += d_square * x reads x",
        "",
        "gradients: d_x, d_y",
    ]


def test_plan_text_names_labels_and_disconnected_values():
    text = plan_of(PRUNED).text()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "6 softmax_loss d_zz = d_loss * (softmax(zz) - t) / N reads loss.probs, t" in lines
    assert "4 add d_h = d_z" in lines
    assert "3 sigmoid d_h += d_s * s * (1 - s) reads s" in lines
    assert lines[-2:] == ["gradients: d_x, d_W, d_b", "zero (no path to the output): d_u"]


def test_plan_text_of_reduction_sum_has_no_batch_division():
    plan = plan_of("""
        graph g {
            input y: [4, 3]
            input t: [4, 3]
            loss = softmax_loss(y, t, reduction=sum)
            output loss
        }
    """)
    lines = [" ".join(line.split()) for line in plan.text().splitlines()]
    assert "1 loss = softmax_loss(y, t, reduction=sum) f64 saves t, loss.probs" in lines
    assert "1 softmax_loss d_y = d_loss * (softmax(y) - t) reads loss.probs, t" in lines


def test_emit_json_has_the_documented_keys(capsys):
    data = json.loads(emit(["compile", str(MODELS / "apple_orange.graph"), "--emit", "json"], capsys))
    assert set(data) == {"graph", "inputs", "params", "outputs", "forward", "backward"}
    assert data["graph"] == "buy_apple_orange"
    assert data["inputs"] == [{"name": n, "type": "f64"} for n in ("apple", "apple_num", "orange", "orange_num", "tax")]
    assert data["params"] == []
    assert data["outputs"] == ["price"]
    assert [set(step) for step in data["forward"]] == [{"out", "op", "args", "attrs", "type", "saves", "frees"}] * 4
    assert data["forward"][2] == {
        "out": "all_price",
        "op": "add",
        "args": ["apple_price", "orange_price"],
        "attrs": {},
        "type": "f64",
        "saves": [],
        "frees": ["apple_price", "orange_price"],
    }
    backward = data["backward"]
    assert set(backward) == {"seed", "steps", "gradients"}
    assert backward["seed"] == "price"
    assert [set(step) for step in backward["steps"]] == [{"node", "op", "dout", "grads"}] * 4
    assert backward["steps"][0] == {
        "node": "price",
        "op": "mul",
        "dout": "d_price",
        "grads": [
            {"target": "d_all_price", "accumulate": False, "rule": "d_price * tax", "reads": ["tax"]},
            {"target": "d_tax", "accumulate": False, "rule": "d_price * all_price", "reads": ["all_price"]},
        ],
    }
    assert backward["gradients"] == ["d_apple", "d_apple_num", "d_orange", "d_orange_num", "d_tax"]


def test_emit_json_of_a_net_with_params_and_attributes(capsys):
    data = json.loads(emit(["compile", str(MODELS / "two_layer_net.graph"), "--emit", "json"], capsys))
    assert data["params"] == [
        {"name": "W1", "type": "f64[784, 50]"},
        {"name": "b1", "type": "f64[50]"},
        {"name": "W2", "type": "f64[50, 10]"},
        {"name": "b2", "type": "f64[10]"},
    ]
    assert data["inputs"] == [{"name": "x", "type": "f64[N, 784]"}, {"name": "t", "type": "f64[N, 10]"}]
    assert data["forward"][-1]["attrs"] == {"reduction": "mean"}
    assert [s["out"] for s in data["forward"]] == ["affine1", "relu1", "y", "loss"]


@pytest.mark.parametrize("emit_as", ["plan", "json"])
def test_emit_to_a_file(tmp_path, capsys, emit_as):
    out = tmp_path / f"apple.{emit_as}"
    assert main(["compile", str(MODELS / "apple.graph"), "--emit", emit_as, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wrote {out}\n"
    text = out.read_text()
    if emit_as == "plan":
        assert text == APPLE_PLAN
    else:
        assert json.loads(text)["graph"] == "buy_apple"


def test_no_backward_step_for_values_that_only_feed_labels():
    plan = plan_of("""
        graph g {
            input y: [2, 3]
            input u: [2, 3]
            t = relu(u)
            loss = softmax_loss(y, t)
            output loss
        }
    """)
    assert [step.node for step in plan.backward] == ["loss"]
    assert backward_writes(plan) == [("loss", "d_y", False)]
    assert plan.disconnected == ()
    assert plan.text().splitlines()[-1] == "gradients: d_y"


def test_the_two_layer_nets_backward_reads_like_the_book():
    [compiled] = front_end_file(MODELS / "two_layer_net.graph")
    text = make_plan(compiled.checked, compiled.types).text()
    assert text.endswith(
        textwrap.dedent("""\
            backward from loss (4 steps, seeded with d_loss = 1)
              4  softmax_loss  d_y = d_loss * (softmax(y) - t) / N  reads loss.probs, t
              3  affine        d_relu1 = d_y @ W2.T                 reads W2
                               d_W2 = relu1.T @ d_y                 reads relu1
                               d_b2 = sum(d_y, axis=0)
              2  relu          d_affine1 = d_relu1 * relu1.mask     reads relu1.mask
              1  affine        d_x = d_affine1 @ W1.T               reads W1
                               d_W1 = x.T @ d_affine1               reads x
                               d_b1 = sum(d_affine1, axis=0)

            gradients: d_x, d_W1, d_b1, d_W2, d_b2
            """)
    )


def test_broadcast_gradients_show_the_sums_that_undo_broadcasting():
    plan = plan_of("""
        graph g {
            input x: [N, 3]
            param w: [1, 3] = ones
            param v: [3] = ones
            param s: [] = 1
            a = mul(x, w)
            b = mul(a, v)
            c = add(b, s)
            output c
        }
    """)
    rules = {w.target: w.rule for step in plan.backward for w in step.writes}
    assert rules == {
        "d_b": "d_c",
        "d_s": "sum(d_c)",
        "d_a": "d_b * v",
        "d_v": "sum(d_b * a, axis=0)",
        "d_x": "d_a * w",
        "d_w": "sum(d_a * x, axis=0, keepdims=True)",
    }


def test_values_after_an_output_and_values_nobody_reads_are_freed_too():
    plan = plan_of("""
        graph g {
            input x: [2]
            a = relu(x)
            b = sigmoid(a)
            c = mul(b, 2)
            d = mul(c, 3)
            e = relu(x)
            output b, d
        }
    """)
    frees = {step.out: step.frees for step in plan.forward}
    assert frees == {"a": (), "b": ("a",), "c": (), "d": ("c",), "e": ("e",)}


def test_a_gradient_the_caller_asked_for_is_never_freed():
    [compiled] = front_end(
        "graph g {\n    input x: [2] = [1, 2]\n    h = mul(x, 3)\n    y = sigmoid(h)\n    output y\n}\n", "g.graph"
    )
    plan = make_plan(compiled.checked, compiled.types, wrt=("h", "x"))
    frees = {step.node: step.frees for step in plan.backward}
    assert frees == {"y": ("d_y",), "h": ()}  # d_h is returned
    assert plan.gradients == ("d_h", "d_x")


def test_gradients_that_are_one_array_are_found():
    """add hands dout to both operands: d_p and d_q alias the seed until a fresh sum makes d_p its own."""
    from graphc.plan import shared_gradients

    plan = plan_of("""
        graph g {
            param p: [2] = [1, 2]
            param q: [2] = [3, 4]
            s = add(p, q)
            t = add(p, s)
            output t
        }
    """)
    writes = {(step.node, w.target): (w.accumulate, w.in_place) for step in plan.backward for w in step.writes}
    assert writes[("s", "d_p")] == (True, False)  # a fresh sum: d_p was the seed's array
    assert shared_gradients(plan) == ("d_q",)
