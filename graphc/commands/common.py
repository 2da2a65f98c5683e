"""What several commands share: loading a graph, feeding it from the command
line, and printing numbers, arrays and JSON."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from graphc import limits
from graphc.errors import Diagnostic, GraphcError, Source, Span, did_you_mean

if TYPE_CHECKING:
    import numpy as np

    from graphc.compiler import CompiledGraph
    from graphc.program import Program

# Building the parser imports every command module, so these modules import
# only the standard library and cheap graphc modules at the top; numpy, the
# compiler and third-party packages load inside the functions that use them
# (tests/test_startup.py checks what `graphc --help` imports). The choices the
# flags offer are spelled here for that reason; the same test checks them
# against graphc.ir.DTYPE_CHOICES and graphc.ops.MODES.
DTYPE_CHOICES = ("float32", "float64")
MODES = ("train", "eval")

# --- arguments ---------------------------------------------------------------


def add_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a .graph file")
    parser.add_argument("--graph", metavar="NAME", help="which graph of the file (default: the first)")


# Whole-number flags fit an int64, as every count numpy takes does.
_MOST = 2**63 - 1


def whole_number(flag: str, least: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number at least `least`, else a GraphcError naming the flag.

    `1e9` is read as 1000000000: whole numbers are often written so.
    """

    def parse(text: str) -> int:
        value = _whole(text)
        example = f"e.g. `{flag} {max(least, 100)}`"
        if value is None:
            raise GraphcError(f"{flag} takes a whole number, got `{_clip(text)}`", hint=example, code="E502")
        if value < least:
            raise GraphcError(f"{flag} must be at least {least}, got {value}", hint=example, code="E502")
        if value > _MOST:
            raise GraphcError(f"{flag} must be at most {_MOST}, got {_clip(text)}", hint=example, code="E502")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (a tolerance, a step, a rate).

    ArgumentTypeError, so that argparse names the flag: graphc's parser makes it
    a usage error (E501), a benchmark's plain argparse prints it as usual.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, got `{_clip(text)}`") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {_clip(text)}")
    return value


def threads_setting(text: str) -> int | str:
    """`--threads`' argparse type: a whole number from 1, or `auto`."""
    from graphc.threads import AUTO, MOST_THREADS

    hint = f"e.g. `--threads 1`, or `--threads {AUTO}` to choose by measuring"
    if text.strip().lower() == AUTO:
        return AUTO
    value = _whole(text)
    if value is None:
        raise GraphcError(f"--threads takes a whole number or `{AUTO}`, got `{_clip(text)}`", hint=hint, code="E502")
    if not 1 <= value <= MOST_THREADS:
        raise GraphcError(f"--threads must be from 1 to {MOST_THREADS}, got {_clip(text)}", hint=hint, code="E502")
    return value


def add_threads_argument(parser: argparse._ActionsContainer) -> None:
    """--threads N|auto: train, eval, time and run take it alike."""
    from graphc.threads import DEFAULT_THREADS

    parser.add_argument(
        "--threads",
        type=threads_setting,
        default=DEFAULT_THREADS,
        metavar="N|auto",
        help=f"threads numpy's BLAS may use (default {DEFAULT_THREADS}: the fastest on a busy machine, and the same "
        "numbers on every rerun); auto: the fastest count by timing, which reruns may not repeat in the last bits",
    )


def _whole(text: str) -> int | None:
    """`text` as a whole number (`42`, `-3`, `1e9`), or None."""
    digits = text.strip().lstrip("+-")
    if digits.isascii() and digits.isdigit():
        return int(text) if len(digits) <= limits.MAX_INT_DIGITS else None
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value) or abs(value) > 2**53:
        return None  # a fraction, or beyond what a float holds exactly
    return int(value)


def check_batch_size(graph: CompiledGraph, batch: int, what: str, where: str | None = None) -> None:
    """Refuse a batch size at which one step would hold a tensor of more numbers
    than limits.MAX_ELEMENTS, before anything is made at that size.

    The batch is each input's leading symbolic dim; the graph's `dim` sizes give
    the rest. `what` names where the size comes from (`--batch 1000000000`).
    """
    dims: dict[str, int] = dict(graph.ir.dims)
    for decl in graph.ir.inputs():
        declared = graph.types[decl.name].shape
        if declared and isinstance(declared[0], str):
            dims[declared[0]] = batch
    for name, t in graph.types.items():
        sizes = [dims.get(d, 1) if isinstance(d, str) else d for d in t.shape]
        count = math.prod(sizes)
        if limits.too_many_elements(count):
            raise GraphcError(
                f"{what}: one step would hold `{name}` of shape {sizes}, {count:,} numbers, "
                f"more than graphc takes in one tensor",
                where=where,
                hint=limits.elements_hint(),
                code="E801",
            )


def add_seed_argument(
    parser: argparse._ActionsContainer,
    default: int | None = 0,
    what: str = "param initializers, made-up inputs and dropout's masks",
) -> None:
    parser.add_argument(
        "--seed",
        type=whole_number("--seed", least=0),
        default=default,
        metavar="S",
        help=f"seed for the {what} (default 0)",
    )


def add_dtype_argument(
    parser: argparse._ActionsContainer, help: str = "make every float value this dtype (default: as the graph declares)"
) -> None:
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help=help)


def add_mode_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="train",
        help="train (default): dropout drops and batchnorm uses the batch's statistics, updating its running ones; "
        "eval: as when predicting",
    )


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="give an input (or param) a value: a number or a list such as [[1, 2], [3, 4]]",
    )
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="give an input a value from a .npy file"
    )
    add_seed_argument(parser)
    parser.add_argument(
        "--weights", metavar="W.npz", help="set the params from a checkpoint (graphc train --save) or an .npz of params"
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


# --- loading ------------------------------------------------------------------


def load_graphs(args: argparse.Namespace) -> list[CompiledGraph]:
    from graphc.compiler import front_end_file

    graphs = front_end_file(args.file)
    print_diagnostics(d for g in graphs for d in g.warnings)
    return graphs


def load_program(args: argparse.Namespace, dtype: str | None = None) -> tuple[Program, dict[str, np.ndarray]]:
    """The selected graph as a Program, with --weights, --set and --input applied; returns (program, feeds)."""
    from graphc.program import Program

    compiled = select_graph(load_graphs(args), args)
    program = Program(compiled, dtype=dtype, seed=getattr(args, "seed", 0), mode=getattr(args, "mode", "train"))
    if getattr(args, "weights", None):
        from graphc.checkpoint import load_weights

        load_weights(program, args.weights)  # before --set, so --set can still change one param
    feeds: dict[str, np.ndarray] = {}
    for text in getattr(args, "set", []):
        name, value, where = _split_assignment("--set", text)
        array = _parse_value(value, where)
        _assign(program, feeds, name, array, where)
    for text in getattr(args, "input", []):
        name, path, where = _split_assignment("--input", text)
        array = _load_npy(path, where.value)
        _assign(program, feeds, name, array, where)
    return program, feeds


def select_graph(graphs: list[CompiledGraph], args: argparse.Namespace) -> CompiledGraph:
    """The graph `--graph NAME` names, or the file's first; a wrong name is shown on the command line."""
    from graphc.compiler import NO_GRAPH, NO_GRAPH_HINT, select

    name = getattr(args, "graph", None)
    if not graphs:
        raise GraphcError(NO_GRAPH, where=str(args.file), hint=NO_GRAPH_HINT, code="E113")
    try:
        return select(graphs, name)
    except GraphcError as err:
        assert name is not None  # without --graph, select takes the first graph
        where = _Where("--graph", name)
        message = f"{err.message} in {args.file}"
        raise GraphcError(message, where.span(0, len(name)), err.diagnostics[0].hint, code=err.code) from None


class _Where:
    """Spans into one command-line argument, shown as `--set NAME=VALUE`."""

    def __init__(self, flag: str, text: str):
        self.source = Source(f"{flag} {text}", "<command line>")
        self.offset = len(flag) + 1
        self.text = text
        equals = text.find("=")
        self.name = self.span(0, equals if equals >= 0 else len(text))
        self.value = self.span(equals + 1, len(text)) if equals >= 0 else self.span(0, len(text))

    def span(self, start: int, end: int) -> Span:
        return Span(self.source, 1, self.offset + start + 1, 1, self.offset + max(end, start + 1) + 1)


def _split_assignment(flag: str, text: str) -> tuple[str, str, _Where]:
    where = _Where(flag, text)
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise GraphcError(
            f"{flag} takes NAME=VALUE, got `{_clip(text)}`",
            where.span(0, len(text)),
            f"e.g. `{flag} x=3`" if flag == "--set" else f"e.g. `{flag} x=x.npy`",
            code="E504",
        )
    if not value:
        raise GraphcError(f"{flag} {_clip(name)}= has no value", where.value, code="E504")
    return name.strip(), value, where


def _parse_value(text: str, where: _Where) -> np.ndarray:
    import numpy as np

    from graphc.fileio import HugeInt, JSONProblem, parse_json

    try:
        value = parse_json(text)
    except JSONProblem as problem:
        if problem.depth is not None:
            raise GraphcError(f"`{_clip(text)}` is {problem}", where.value, code="E406") from None
        try:
            value = float(text)  # also inf and nan
        except ValueError:
            raise GraphcError(
                f"cannot read `{_clip(text)}` as a number or a list",
                where.value,
                "write a number such as 1.5e-3, or a list such as [[1, 2], [3, 4]]",
                code="E406",
            ) from None
    wrong = _not_a_number(value)
    if wrong is not None:
        if isinstance(value, list):
            message = f"`{_clip(text)}` is not a list of numbers: it holds {wrong}"
        elif isinstance(value, HugeInt):
            message = f"`{_clip(text)}` is {value}, beyond any number graphc computes with"
        else:
            message = f"`{_clip(text)}` is not a number or a list of numbers"
        raise GraphcError(
            message, where.value, "write a number such as 1.5e-3, or a list such as [[1, 2], [3, 4]]", code="E406"
        )
    try:
        array = np.array(value, dtype=np.float64)
    except OverflowError:
        raise GraphcError(
            f"`{_clip(text)}` holds a number beyond any float (about 1.8e308)", where.value, code="E406"
        ) from None
    except (ValueError, TypeError):
        raise GraphcError(
            f"`{_clip(text)}` is not a number or a list of numbers with equal rows", where.value, code="E406"
        ) from None
    # Whole numbers stay integers: class-index labels and i64 inputs need them.
    try:
        exact = np.array(value)
    except OverflowError:  # beyond 64 bits: the feed reports it as out of range
        return array
    return exact if exact.dtype.kind in "iu" else array


def _not_a_number(value: Any) -> str | None:
    """What in a parsed --set value is not a number (`null`, `true`, a string, ...), or None."""
    from graphc.fileio import HugeInt, shown_json

    if isinstance(value, list):
        return next((wrong for item in value if (wrong := _not_a_number(item)) is not None), None)
    if isinstance(value, HugeInt):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    return shown_json(value, 30)


def _clip(text: str, width: int = 60) -> str:
    """Text from the command line as a message shows it: on one line (control
    characters escaped, as Python spells them) and at most `width` long."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: width * 2])
    return text if len(text) <= width else text[: width - 3] + "..."


def _load_npy(path: str, span: Span) -> np.ndarray:
    """An .npy array of numbers; its header is checked before its data is read."""
    from graphc.fileio import ArrayProblem, load_npy

    try:
        array = load_npy(path)
    except FileNotFoundError:
        raise GraphcError(f"no such file: {_clip(path, 200)}", span, code="E601") from None
    except IsADirectoryError:
        raise GraphcError(f"is a directory: {_clip(path, 200)}", span, code="E602") from None
    except OSError as err:
        raise GraphcError(f"cannot read {_clip(path, 200)}: {err.strerror or err}", span, code="E603") from None
    except ArrayProblem as problem:
        raise GraphcError(
            f"cannot read {_clip(path, 200)} as a .npy array: it {problem.reason}",
            span,
            problem.hint or "save one with numpy.save(path, array)",
            code="E801" if problem.kind == "size" else "E606",
        ) from None
    return array


def _assign(program: Program, feeds: dict[str, np.ndarray], name: str, array: np.ndarray, where: _Where) -> None:
    """Feed an input (or set a param), pointing any error at the command line."""
    try:
        if name in program.param_names:
            program.params[name] = array
        else:
            feeds[name] = program.feed(name, array)
    except GraphcError as err:
        first = err.diagnostics[0]
        if name not in program.input_names and name not in program.param_names:
            message = f"no input or param named `{_clip(name)}` in graph `{program.name}`"
            # Params too: a block's are named by its use (`h1.W`), easily mistyped.
            hint = did_you_mean(name, [*program.input_names, *program.param_names]) or first.hint
            raise GraphcError(message, where.name, hint, code="E405") from None
        # Show the argument, and the declaration it disagrees with.
        notes = [(f"`{name}` is declared here", first.span)] if first.span is not None else []
        raise GraphcError(first.message, where.value, first.hint, notes=notes, code=first.code) from None


# --- printing -----------------------------------------------------------------


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    for diagnostic in diagnostics:
        print(diagnostic.render(), file=sys.stderr)


# Figures keep only the digits rounding cannot change (graphc.figures).
SCALAR_DIGITS = 10  # at most, for a single number
ELEMENT_DIGITS = 6  # for each number of a small array printed in full
SUMMARY_DIGITS = 4  # for the mean and norm of a large array


def fmt_number(value: float, dtype: Any = "float64") -> str:
    """One number computed in `dtype`, to the digits rounding leaves alone."""
    import numpy as np

    from graphc.figures import rounding_error, stable_number

    if np.dtype(dtype).kind in "iub":
        return str(int(value))
    return stable_number(float(value), rounding_error(dtype) * abs(float(value)), SCALAR_DIGITS)


def _summary(array: np.ndarray) -> str:
    """`f64[784, 50]  mean M  norm N`, each figure to the digits rounding leaves alone."""
    import numpy as np

    from graphc.figures import rounding_error, stable_number

    finite = np.isfinite(array)
    flags = ""
    if not finite.all():
        flags = f"  ({int(np.isnan(array).sum())} NaN, {int(np.isinf(array).sum())} inf)"
        array = np.where(finite, array, 0)
    dtype = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(array.dtype, str(array.dtype))
    wide = array.astype(np.float64).ravel()  # float32 sums overflow where the mean would not
    error = rounding_error(array.dtype)
    largest = float(np.max(np.abs(wide))) if wide.size else 0.0
    mean = stable_number(float(np.mean(wide)), error * largest, SUMMARY_DIGITS)
    norm_value = float(np.linalg.norm(wide))
    norm = stable_number(norm_value, error * norm_value, SUMMARY_DIGITS)
    return f"{dtype}{list(array.shape)}  mean {mean}  norm {norm}{flags}"


def _in_full(array: np.ndarray) -> str:
    """A small array as a list, each number to the digits rounding leaves alone
    at the array's scale (an element that is rounding noise beside the largest is 0)."""
    import numpy as np

    from graphc.figures import rounding_error, stable_number

    formatter: dict[str, Callable[[Any], str]] = {"int": str}
    if array.dtype.kind == "f":
        finite = np.abs(array[np.isfinite(array)])
        uncertainty = rounding_error(array.dtype) * float(finite.max() if finite.size else 0.0)
        formatter["float_kind"] = lambda v: stable_number(float(v), uncertainty, ELEMENT_DIGITS)
    text = np.array2string(array, separator=", ", max_line_width=1 << 16, formatter=formatter)  # type: ignore[arg-type]
    return text.replace("\n", "")  # rows of a matrix on one line: [[1, 2], [3, 4]]


def fmt_array(value: Any, small: int = 12) -> str:
    """A scalar as a number, a small array in full, a large one summarised by
    shape, mean and norm; every figure to the digits rounding leaves alone."""
    import numpy as np

    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return fmt_number(array.item(), array.dtype)
    if array.size <= small:
        return _in_full(array)
    return _summary(array)


def fmt_named(values: dict[str, Any], indent: str = "  ") -> list[str]:
    """One line per value, names and array summaries in aligned columns."""
    cells = [(name, fmt_array(value).split("  ", 1)) for name, value in values.items()]
    name_width = max((len(n) for n, _ in cells), default=0)
    head_width = max((len(c[0]) for _, c in cells if len(c) > 1), default=0)
    lines = []
    for name, parts in cells:
        text = parts[0] if len(parts) == 1 else f"{parts[0]:<{head_width}}  {parts[1]}"
        lines.append(f"{indent}{name:<{name_width}}  {text}")
    return lines


def to_json(value: Any) -> Any:
    """Plain floats and lists; NaN and infinities as the strings "nan", "inf", "-inf"."""
    import numpy as np

    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def print_json(value: Any) -> None:
    import json  # here: only --json needs it

    print(json.dumps(to_json(value), indent=2))


def write_output(text: str, output: str | None) -> None:
    """Print, or write atomically to -o."""
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        from graphc.fileio import write_text

        write_text(output, text)
        print(f"wrote {output}", file=sys.stderr)
