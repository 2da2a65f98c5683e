"""Stage 1b: a module's `import "..."` lines -> the blocks they bring in.

A path is relative to the file that imports it; `std/...` names a file of
graphc's standard library of blocks, which ships inside the package
(graphc/std/). Imports are followed transitively, each file read once
however many files import it; graphs in an imported file are not compiled.
A missing or unreadable file and an import cycle are errors at the import's
string; an error inside an imported file is shown there, with a note at the
import.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from graphc import ast
from graphc.errors import Diagnostic, GraphcError

STD_PREFIX = "std/"


def std_dir() -> Path:
    """The standard library's directory, inside the installed package."""
    return Path(str(resources.files("graphc").joinpath("std")))


def resolve(spec: ast.Import, importer: str) -> Path:
    """Where `import "PATH"` in the file `importer` points."""
    if spec.path.startswith(STD_PREFIX):
        return std_dir() / spec.path[len(STD_PREFIX) :]
    base = Path(importer).parent if not importer.startswith("<") else Path.cwd()
    return base / spec.path


def imported_blocks(module: ast.Module) -> list[tuple[ast.Block, ast.Import]]:
    """Every block the module's imports bring in, transitively, in import order,
    each with the module's own import that brought it in."""
    from graphc.parse import parse_file  # parse imports nothing of this stage

    blocks: list[tuple[ast.Block, ast.Import]] = []
    loaded: set[Path] = set()
    errors: list[Diagnostic] = []
    root = Path(module.source.path).resolve() if not module.source.path.startswith("<") else None

    def visit(current: ast.Module, chain: tuple[Path, ...], site: ast.Import | None) -> None:
        for spec in current.imports:
            if "\x00" in spec.path:  # no file system takes one: resolving or opening it is a ValueError
                hint = "a NUL character (\\x00) is in the path"
                errors.append(Diagnostic("cannot import: no file has such a name", spec.span, hint, code="E140"))
                continue
            path = resolve(spec, current.source.path)
            key = path.resolve()
            if key in chain:
                names = " -> ".join(_shown(p) for p in chain[chain.index(key) :] + (key,))
                hint = "a file cannot import itself, even through others"
                errors.append(Diagnostic(f"import cycle: {names}", spec.span, hint, code="E141"))
                continue
            if key in loaded:
                continue
            loaded.add(key)
            try:
                imported = parse_file(path)
            except GraphcError as err:
                errors.extend(_at_import(d, spec, path) for d in err.diagnostics)
                continue
            blocks.extend((block, site or spec) for block in imported.blocks)
            visit(imported, chain + (key,), site or spec)

    visit(module, (root,) if root is not None else (), None)
    if errors:
        raise GraphcError(code=None, diagnostics=errors)
    return blocks


def _shown(path: Path) -> str:
    return path.name


def _at_import(diagnostic: Diagnostic, spec: ast.Import, path: Path) -> Diagnostic:
    """A problem with an imported file: at the import when the file could not be read,
    else where it is in that file, with a note at the import."""
    if diagnostic.span is None:
        return Diagnostic(
            f"cannot import `{spec.path}`: {diagnostic.message}",
            spec.span,
            diagnostic.hint or f"looked for {path}; an import's path is relative to the file that imports it",
            code="E140",
        )
    return dataclasses.replace(diagnostic, notes=diagnostic.notes + (("imported here", spec.span),))
