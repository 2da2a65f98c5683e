"""Run graphc's language server on stdin and stdout, for editors: live
diagnostics from the checker as you type, hover with each value's shape and
dtype and each op's rules, go-to-definition for names and blocks,
completion of ops, attributes and names, and formatting. An editor starts
it; see docs/editors.md. Needs the `lsp` extra: pip install "graphc[lsp]"."""

from __future__ import annotations

import argparse

from graphc.errors import ExitCode, GraphcError

HELP = "run the language server (LSP on stdin/stdout) for editors"
INSTALL = 'pip install "graphc[lsp]"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass  # the editor talks to it over stdin and stdout


def run(args: argparse.Namespace) -> int:
    try:
        import lsprotocol  # noqa: F401 (what the server speaks)
        import pygls  # noqa: F401
    except ImportError:
        raise GraphcError(
            "`graphc lsp` needs pygls, which is not installed",
            hint=f"install graphc's LSP extra: {INSTALL}",
            code="E509",
        ) from None
    from graphc.lsp import serve

    serve()
    return ExitCode.OK
