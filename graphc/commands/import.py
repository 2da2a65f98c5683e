"""Import an ONNX model: write it as a .graph file, and its params (and
batchnorm's running statistics) as a checkpoint beside it, which `graphc run
--weights`, `graphc eval --weights` and `graphc train --resume` read. The
model may use the ops graphc's own export writes (graphc compile --emit
onnx) and the plain forms of them other exporters write (Gemm, Sigmoid,
Conv); docs/interop.md lists them."""

from __future__ import annotations

import argparse
import sys

from graphc.errors import ExitCode

HELP = "turn an ONNX model into a .graph file and a checkpoint of its weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to import")
    parser.add_argument("-o", "--output", metavar="OUT.graph", required=True, help="the .graph file to write")
    parser.add_argument("--weights", metavar="W.npz", help="where to write the params' values (default: OUT with .npz)")


def run(args: argparse.Namespace) -> int:
    from graphc.import_onnx import import_file

    program = import_file(args.model, args.output, args.weights)
    print(f"wrote {args.output}", file=sys.stderr)
    if program.param_names or program.state:
        print(f"wrote {args.weights or args.output.rsplit('.', 1)[0] + '.npz'}", file=sys.stderr)
    return ExitCode.OK
