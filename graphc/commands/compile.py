"""Compile a graph and print (or write with -o) what it compiles to: the
forward and backward plans as text, the plan as JSON, a standalone numpy
module, a Graphviz DOT diagram, the graph with its blocks expanded, an
ONNX model of its inference pass (graphc.export_onnx), or PyTorch source
(graphc.export_torch). With --batch, the plan also shows the memory one
training step holds, step by step, and its peak."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from graphc._gc import gc_paused
from graphc.commands.common import (
    add_dtype_argument,
    add_file_arguments,
    add_mode_argument,
    add_seed_argument,
    load_graphs,
    select_graph,
    whole_number,
    write_output,
)
from graphc.errors import ExitCode, GraphcError, did_you_mean

if TYPE_CHECKING:
    from graphc.compiler import CompiledGraph
    from graphc.plan import Plan

HELP = "print the forward and backward plans, or the graph as Python, JSON, DOT, ONNX, PyTorch or blocks expanded"


def wrt_names(graph: CompiledGraph, text: str | None) -> tuple[str, ...] | None:
    """--wrt: `params`, `inputs`, `all` (the default) or names, comma-separated."""
    inputs = tuple(d.name for d in graph.ir.inputs())
    params = tuple(d.name for d in graph.ir.params())
    if text is None or text == "all":
        return None
    if text == "params":
        return params
    if text == "inputs":
        return inputs
    names = tuple(n.strip() for n in text.split(","))
    if not any(names):
        raise GraphcError(
            f"--wrt names no value: `{text}`",
            hint="give `params`, `inputs`, `all`, or names of inputs and params",
            code="E506",
        )
    for name in names:
        if not name:
            raise GraphcError(
                f"--wrt has an empty name: `{text}`",
                hint="separate names by single commas, e.g. `--wrt W1,b1`",
                code="E506",
            )
        if name not in inputs + params:
            hint = (
                did_you_mean(name, inputs + params) or "give `params`, `inputs`, `all`, or names of inputs and params"
            )
            raise GraphcError(
                f"--wrt: no input or param named `{name}` in graph `{graph.name}`", hint=hint, code="E405"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=names.index)
    if duplicates:
        raise GraphcError(f"--wrt names `{duplicates[0]}` twice: `{text}`", hint="name each value once", code="E506")
    return names


def training_plan(graph: CompiledGraph, args: argparse.Namespace) -> Plan:
    """The plan --wrt and --dtype ask for."""
    from graphc.ir import float_dtype, retype
    from graphc.plan import make_plan

    types = retype(graph.types, float_dtype(getattr(args, "dtype", None)))
    return make_plan(
        graph.checked, types, wrt=wrt_names(graph, getattr(args, "wrt", None)), mode=getattr(args, "mode", "train")
    )


def _plan(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.emit import plan_text

    plan = training_plan(graph, args)
    text = plan_text(plan)
    if args.batch is not None:
        from graphc.memory import bind_dims, memory_text, predict_memory

        text += "\n" + memory_text(predict_memory(plan, bind_dims(plan, graph.ir, args.batch)))
    return text


def _json(graph: CompiledGraph, args: argparse.Namespace) -> str:
    import json

    from graphc.emit import plan_json

    plan = training_plan(graph, args)
    data = plan_json(plan)
    if args.batch is not None:
        from graphc.memory import bind_dims, memory_json, predict_memory

        data["memory"] = memory_json(predict_memory(plan, bind_dims(plan, graph.ir, args.batch)))
    return json.dumps(data, indent=2) + "\n"


def _python(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.codegen import python_module

    return python_module(graph, dtype=args.dtype, wrt=wrt_names(graph, args.wrt), mode=args.mode)


def _dot(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.draw import dot_source

    return dot_source(graph)


def _expanded(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.expanded import expanded_text

    return expanded_text(graph)


def _onnx(graph: CompiledGraph, args: argparse.Namespace) -> bytes:
    from graphc.export_onnx import import_onnx, onnx_model, onnx_train_step
    from graphc.program import Program

    import_onnx()  # before any work: without the extra, say how to install it
    # The inference model predicts (eval mode); a training step runs in --mode.
    program = Program(graph, dtype=args.dtype, seed=args.seed, mode=args.mode if args.train_step else "eval")
    if args.weights:
        from graphc.checkpoint import load_weights

        load_weights(program, args.weights)
    model = onnx_train_step(program) if args.train_step else onnx_model(program)
    return bytes(model.SerializeToString())


def _torch(graph: CompiledGraph, args: argparse.Namespace) -> str:
    from graphc.export_torch import torch_module
    from graphc.program import Program

    return torch_module(Program(graph, dtype=args.dtype, mode="eval"))


# What --emit can produce; each takes the checked, typed graph. ONNX is a binary file.
EMITTERS: dict[str, Callable[[CompiledGraph, argparse.Namespace], str | bytes]] = {
    "plan": _plan,
    "json": _json,
    "python": _python,
    "dot": _dot,
    "expanded": _expanded,
    "onnx": _onnx,
    "torch": _torch,
}
BINARY = {"onnx"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_file_arguments(parser)
    parser.add_argument("--emit", choices=EMITTERS, default="plan", help="what to emit (default: plan)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of printing")
    parser.add_argument(
        "--wrt",
        metavar="WHAT",
        help="which gradients backward computes: `all` inputs and params (default), `params` "
        "(a training step), `inputs`, or names, comma-separated",
    )
    add_dtype_argument(parser, help="make every float value this dtype")
    add_mode_argument(parser)
    parser.add_argument(
        "--batch",
        type=whole_number("--batch"),
        metavar="B",
        help="with --emit plan or json: the memory of one step at batch size B, step by step, and its peak",
    )
    add_seed_argument(parser, what="param initializers of --emit onnx")
    parser.add_argument(
        "--weights", metavar="W.npz", help="with --emit onnx: the params (and batchnorm's statistics) of a checkpoint"
    )
    parser.add_argument(
        "--train-step",
        action="store_true",
        help="with --emit onnx: one training step in --mode, whose outputs are the loss and every param's gradient",
    )


@gc_paused  # as check: the printers, as the stages, make a row or line per node and no reference cycles
def run(args: argparse.Namespace) -> int:
    graph = select_graph(load_graphs(args), args)
    for flag, given in (("--train-step", args.train_step), ("--weights", args.weights)):
        if given and args.emit != "onnx":
            raise GraphcError(f"{flag} goes with --emit onnx", hint="e.g. `--emit onnx -o model.onnx`", code="E505")
    if args.emit in BINARY and args.output in (None, "-"):
        raise GraphcError(
            f"--emit {args.emit} writes a binary file: name it with -o", hint="e.g. `-o model.onnx`", code="E505"
        )
    emitted = EMITTERS[args.emit](graph, args)
    if isinstance(emitted, bytes):
        from graphc.fileio import write_bytes

        write_bytes(args.output, emitted)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        write_output(emitted, args.output)
    return ExitCode.OK
