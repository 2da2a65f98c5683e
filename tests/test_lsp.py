"""`graphc lsp` end to end: pytest-lsp starts `python -m graphc lsp` as an
editor would and speaks the protocol to it: diagnostics as a buffer is
opened and changed, hover, go-to-definition, completion and formatting.
Every request is bounded by TIMEOUT, so a server that hangs fails the test."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from fuzzing.mutate import mutated
from helpers import ROOT, needs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from graphc import lsp as graphc_lsp
from graphc.errors import GraphcError
from graphc.parse import parse

try:
    import pytest_lsp
    from lsprotocol import types as lsp
    from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
except ImportError:
    pytest_lsp = None

SERVER = [sys.executable, "-m", "graphc", "lsp"]
INSTALL = 'pip install ".[test]"'
TIMEOUT = 120  # seconds for any one request or notification, on a machine shared by many


APPLE = (ROOT / "models" / "apple.graph").read_text()
NET = (ROOT / "models" / "two_layer_net.graph").read_text()


if pytest_lsp is not None:
    # Every test talks to the one server the module starts, on the module's event loop.
    talks_to_server = pytest.mark.asyncio(loop_scope="module")

    @pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
    async def client(lsp_client: LanguageClient):
        params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"))
        await asyncio.wait_for(lsp_client.initialize_session(params), TIMEOUT)
        yield
        await asyncio.wait_for(lsp_client.shutdown_session(), TIMEOUT)

else:

    def talks_to_server(test):
        return test

    @pytest.fixture
    def client():
        needs("pytest-lsp", False, INSTALL)


# --- helpers ------------------------------------------------------------------------


async def open_document(client, path: Path, text: str) -> list:
    """Open `path` with `text` in the server; the diagnostics it publishes."""
    uri = path.as_uri()
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="graph", version=1, text=text))
    )
    return await _diagnostics(client, uri)


async def change_document(client, path: Path, text: str, version: int) -> list:
    uri = path.as_uri()
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [lsp.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    return await _diagnostics(client, uri)


async def _diagnostics(client, uri: str) -> list:
    while True:
        params = await asyncio.wait_for(client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), TIMEOUT)
        if params.uri == uri:
            return list(params.diagnostics)


def position_of(text: str, needle: str, offset: int = 0) -> lsp.Position:
    """Where `needle` first occurs in `text` (plus `offset` characters), as an LSP position."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return lsp.Position(line=line, character=index - (text.rfind("\n", 0, index) + 1))


def document(path: Path) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(uri=path.as_uri())


async def hover_text(client, path: Path, position: lsp.Position) -> str | None:
    found = await asyncio.wait_for(client.text_document_hover_async(lsp.HoverParams(document(path), position)), TIMEOUT)
    return None if found is None else found.contents.value


def code_of(text: str) -> str | None:
    """The code graphc gives the text's first mistake, if diagnostics carry codes."""
    from graphc.compiler import compile_module

    try:
        compile_module(parse(text, "<test>"))
    except GraphcError as err:
        return getattr(err.diagnostics[0], "code", None)
    raise AssertionError("the text compiles")


def at(line: int, start: int, end: int) -> lsp.Range:
    return lsp.Range(lsp.Position(line, start), lsp.Position(line, end))


# --- diagnostics ------------------------------------------------------------------------


@talks_to_server
async def test_a_correct_file_has_no_diagnostics(client, tmp_path):
    assert await open_document(client, tmp_path / "apple.graph", APPLE) == []


@talks_to_server
async def test_errors_as_you_type_then_cleared_when_fixed(client, tmp_path):
    path = tmp_path / "apple.graph"
    wrong = APPLE.replace("mul(apple_price, tax)", "mul(apple_prce, tax)")
    (diagnostic,) = await open_document(client, path, wrong)
    assert diagnostic.range == at(8, 16, 26)
    assert diagnostic.message == "undefined name `apple_prce`\nhint: did you mean `apple_price`?"
    assert diagnostic.severity == lsp.DiagnosticSeverity.Error
    assert diagnostic.source == "graphc"
    assert diagnostic.code == code_of(wrong)

    # Another mistake, typed in: a syntax error, which is all the buffer shows until it parses.
    worse = wrong.replace("= 1.1\n", "= 1.1 1.2\n")
    (diagnostic,) = await change_document(client, path, worse, 2)
    assert (diagnostic.range, diagnostic.message) == (
        at(5, 26, 29),
        "unexpected `1.2`; expected `from`, `}` or the end of the line",
    )
    # Fixed: the diagnostics are cleared.
    assert await change_document(client, path, APPLE, 3) == []


@talks_to_server
async def test_a_warning_is_a_warning(client, tmp_path):
    text = APPLE.replace("    output price\n", "    output price\n    unused = mul(tax, tax)\n")
    (diagnostic,) = await open_document(client, tmp_path / "apple.graph", text)
    assert (diagnostic.range, diagnostic.message, diagnostic.severity) == (
        at(11, 4, 10),
        "unused node `unused`\nhint: nothing reads it and it is not an output",
        lsp.DiagnosticSeverity.Warning,
    )


@talks_to_server
async def test_an_unsaved_buffer_is_checked_too(client):
    uri = "untitled:Untitled-1"
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="graph", version=1, text="graph g {\n"))
    )
    (diagnostic,) = await _diagnostics(client, uri)
    assert (diagnostic.range, diagnostic.message) == (
        at(0, 9, 9),
        "unexpected end of file; expected a statement or `}`\nhint: every `graph NAME {` needs a closing `}`",
    )


@talks_to_server
async def test_a_shape_mismatch_is_shown_where_graphc_check_shows_it(client, tmp_path):
    wrong = NET.replace("param W2: [50, 10]", "param W2: [60, 10]")
    (diagnostic,) = await open_document(client, tmp_path / "net.graph", wrong)
    assert diagnostic.range == at(14, 42, 44)
    assert diagnostic.message == (
        "shape mismatch in `affine`: `relu1` has 50 features, `W2` expects 60 (`relu1` is [N, 50], `W2` is [60, 10])\n"
        "hint: param `W2` is declared f64[60, 10] at line 12"
    )
    assert diagnostic.severity == lsp.DiagnosticSeverity.Error


@talks_to_server
async def test_a_mistake_in_an_imported_file_is_shown_at_the_use_or_the_import(client, tmp_path):
    layers = tmp_path / "layers.graph"
    layers.write_text("block dense(x, n) {\n    param W: [in(x), n] = he\n    x -> affine(W, b) -> relu -> out\n}\n")
    text = 'import "layers.graph"\ngraph g {\n    input x: f64[N, 4]\n    x -> dense(3) -> y\n    output y\n}\n'
    path = tmp_path / "main.graph"
    (diagnostic,) = await open_document(client, path, text)
    # `b` is defined nowhere in the block: shown at the use, in this file.
    assert diagnostic.range == at(3, 9, 17)
    assert diagnostic.message == f"in {layers}:3:20: undefined name `y.b`\nhint: did you mean `y.W`?"
    assert [(r.location.uri, r.location.range, r.message) for r in diagnostic.related_information] == [
        (layers.as_uri(), at(2, 19, 20), "undefined name `y.b`"),
        (path.as_uri(), at(3, 9, 17), "in this use of `dense`"),
    ]

    # A block whose mistake no use shows: at the import.
    layers.write_text("block dense(x, n) {\n    x -> relu -> out\n}\n")
    (diagnostic,) = await change_document(client, path, text.replace("dense(3)", "dense(4)"), 2)
    assert diagnostic.range == at(0, 7, 21)
    assert diagnostic.message.startswith(f"in {layers}:1:16: parameter `n` of block `dense` is never used\n")


# --- hover ------------------------------------------------------------------------------------


@talks_to_server
async def test_hover_shows_shape_and_dtype(client, tmp_path):
    path = tmp_path / "apple.graph"
    await open_document(client, path, APPLE)
    assert await hover_text(client, path, position_of(APPLE, "price = mul(apple_price", 2)) == (
        "```graph\nprice: f64\n```\n`price = mul(apple_price, tax)`; shape [], dtype f64"
    )
    assert await hover_text(client, path, position_of(APPLE, "input apple ", 7)) == (
        "```graph\napple: f64\n```\ninput; shape [], dtype f64"
    )

    path = tmp_path / "net.graph"
    await open_document(client, path, NET)
    chain = "x -> affine(W1, b1)"
    assert await hover_text(client, path, position_of(NET, chain)) == (
        "```graph\nx: f64[N, 784]\n```\ninput from images; shape [N, 784], dtype f64"
    )
    assert await hover_text(client, path, position_of(NET, chain, chain.index("W1") + 1)) == (
        "```graph\nW1: f64[784, 50]\n```\nparam, initialized normal(0.01); shape [784, 50], dtype f64"
    )
    assert await hover_text(client, path, position_of(NET, "-> y", 3)) == (
        "```graph\ny: f64[N, 10]\n```\n`y = affine(relu1, W2, b2)`; shape [N, 10], dtype f64"
    )
    assert await hover_text(client, path, position_of(NET, "loss = softmax")) == (
        "```graph\nloss: f64\n```\n`loss = softmax_loss(y, t)`; shape [], dtype f64"
    )


@talks_to_server
async def test_hover_while_a_graph_has_a_mistake_shows_the_types_it_last_checked_with(client, tmp_path):
    path = tmp_path / "net.graph"
    await open_document(client, path, NET)
    typing = NET.replace("    output loss\n", "    output loss\n    h = relu(\n")
    assert len(await change_document(client, path, typing, 2)) == 1
    assert await hover_text(client, path, position_of(typing, "x -> affine")) == (
        "```graph\nx: f64[N, 784]\n```\ninput from images; shape [N, 784], dtype f64\n\n(as the buffer last checked)"
    )


@talks_to_server
async def test_hover_on_an_op_shows_its_rules_with_the_nodes_names(client, tmp_path):
    path = tmp_path / "net.graph"
    await open_document(client, path, NET)
    assert await hover_text(client, path, position_of(NET, "affine(W1", 1)) == "\n".join(
        [
            "```graph\naffine(x, W, b)\n```",
            "forward:",
            "```python\nout = flat(x) @ W\nout += b\n```",
            "here: `affine1 = affine(x, W1, b1)`; backward:",
            "```python\nd_x = d_affine1 @ W1.T\nd_W1 = x.T @ d_affine1\nd_b1 = sum(d_affine1, axis=0)\n```",
        ]
    )
    assert await hover_text(client, path, position_of(NET, "-> relu", 4)) == "\n".join(
        [
            "```graph\nrelu(x)\n```",
            "forward:",
            "```python\nout = np.maximum(x, 0)\n```",
            "here: `relu1 = relu(affine1)`; backward:",
            "```python\nd_affine1 = d_relu1 * relu1.mask\n```",
        ]
    )


@talks_to_server
async def test_hover_in_a_block_shows_each_use(client, tmp_path):
    text = (ROOT / "models" / "mlp_blocks.graph").read_text()
    path = tmp_path / "mlp_blocks.graph"
    await open_document(client, path, text)
    assert await hover_text(client, path, position_of(text, "param W: [in(x)", 6)) == "\n".join(
        [
            "```graph",
            "hidden.1.W: f64[784, 100]",
            "hidden.2.W: f64[100, 100]",
            "hidden.3.W: f64[100, 100]",
            "hidden.4.W: f64[100, 100]",
            "hidden.W: f64[100, 100]",
            "```",
            "in each use of block `dense`",
        ]
    )


# --- definition -----------------------------------------------------------------------------------


@talks_to_server
async def test_definition_of_names_and_blocks(client, tmp_path):
    path = tmp_path / "net.graph"
    await open_document(client, path, NET)
    found = await asyncio.wait_for(
        client.text_document_definition_async(
            lsp.DefinitionParams(document(path), position_of(NET, "affine(W2, b2)", len("affine(W")))
        ),
        TIMEOUT,
    )
    assert found == lsp.Location(uri=path.as_uri(), range=at(11, 10, 12))  # param W2: ...

    (tmp_path / "layers.graph").write_text("# layers\n\nblock twice(x) {\n    out = add(x, x)\n}\n")
    text = 'import "layers.graph"\ngraph g {\n    input a = 1\n    a -> twice -> b\n    output b\n}\n'
    path = tmp_path / "main.graph"
    assert await open_document(client, path, text) == []
    found = await asyncio.wait_for(
        client.text_document_definition_async(lsp.DefinitionParams(document(path), position_of(text, "twice", 2))),
        TIMEOUT,
    )
    assert found == lsp.Location(uri=(tmp_path / "layers.graph").as_uri(), range=at(2, 6, 11))
    found = await asyncio.wait_for(
        client.text_document_definition_async(lsp.DefinitionParams(document(path), position_of(text, "layers", 1))),
        TIMEOUT,
    )
    assert found == lsp.Location(uri=(tmp_path / "layers.graph").as_uri(), range=at(0, 0, 0))


# --- completion --------------------------------------------------------------------------------------


async def completion_labels(client, path: Path, position: lsp.Position) -> dict[str, lsp.CompletionItemKind]:
    found = await asyncio.wait_for(
        client.text_document_completion_async(lsp.CompletionParams(document(path), position)), TIMEOUT
    )
    return {item.label: item.kind for item in found.items}


@talks_to_server
async def test_completion_of_ops_and_names_in_scope(client, tmp_path):
    path = tmp_path / "net.graph"
    text = NET.replace("    output loss\n", "    output loss\n    h = \n")
    await open_document(client, path, text)
    labels = await completion_labels(client, path, position_of(text, "h = ", 4))
    assert {"affine", "relu", "softmax_loss", "conv2d"} <= labels.keys()
    assert labels["affine"] == lsp.CompletionItemKind.Function
    names = {label for label, kind in labels.items() if kind == lsp.CompletionItemKind.Variable}
    assert names == {"N", "x", "t", "W1", "b1", "W2", "b2", "y", "loss"}


@talks_to_server
async def test_completion_of_an_ops_attributes(client, tmp_path):
    path = tmp_path / "sum.graph"
    text = "graph g {\n    input x: f64[3, 4]\n    s = sum(x, )\n    output s\n}\n"
    await open_document(client, path, text)
    found = await asyncio.wait_for(
        client.text_document_completion_async(lsp.CompletionParams(document(path), position_of(text, "x, )", 3))),
        TIMEOUT,
    )
    attributes = {item.label: item.insert_text for item in found.items if item.kind == lsp.CompletionItemKind.Property}
    assert attributes == {"axis": "axis=", "keepdims": "keepdims="}
    assert {item.label for item in found.items if item.kind == lsp.CompletionItemKind.Variable} == {"x", "s"}


@talks_to_server
async def test_completion_in_a_file_that_does_not_parse_yet(client, tmp_path):
    path = tmp_path / "typing.graph"
    text = "graph g {\n    input x: f64[3, 4]\n    param w: [4] = zeros\n    y = mul(\n"
    await open_document(client, path, text)
    labels = await completion_labels(client, path, lsp.Position(3, 12))
    assert {"x", "w"} <= labels.keys()


# --- formatting ----------------------------------------------------------------------------------------


@talks_to_server
async def test_formatting_through_graphc_fmt(client, tmp_path):
    fmt = pytest.importorskip("graphc.fmt")  # helper G's formatter, merged separately
    path = tmp_path / "apple.graph"
    messy = APPLE.replace("apple_price = mul(apple, apple_num)", "apple_price=mul( apple,apple_num )")
    await open_document(client, path, messy)
    edits = await asyncio.wait_for(
        client.text_document_formatting_async(
            lsp.DocumentFormattingParams(document(path), lsp.FormattingOptions(tab_size=4, insert_spaces=True))
        ),
        TIMEOUT,
    )
    (edit,) = edits
    assert edit.new_text == fmt.format_text(messy, str(path))
    assert edit.range == lsp.Range(lsp.Position(0, 0), lsp.Position(messy.count("\n"), 0))


def test_without_pygls_the_command_says_how_to_install_it(capsys, monkeypatch):
    from graphc import cli

    monkeypatch.setitem(sys.modules, "pygls", None)  # `import pygls` raises ImportError
    assert cli.main(["lsp"]) == 2
    _, err = capsys.readouterr()
    assert err == (
        "graphc: error[E509]: `graphc lsp` needs pygls, which is not installed\n"
        'hint: install graphc\'s LSP extra: pip install "graphc[lsp]"\n'
    )


# --- in process: whatever a buffer holds, every request gets an answer ----------------------------------------


def every_request(text: str, path: str) -> None:
    """Analyze the buffer and ask for hover, definition and completion at positions all over it."""
    analysis = graphc_lsp.analyze(text, path)
    graphc_lsp.problems(analysis)
    lines = text.split("\n")
    for line in range(0, len(lines), max(1, len(lines) // 12)):
        for character in {0, len(lines[line]) // 2, len(lines[line]), len(lines[line]) + 3}:
            graphc_lsp.hover(analysis, line, character)
            graphc_lsp.definition(analysis, line, character)
            graphc_lsp.completions(analysis, line, character)


def test_every_request_is_answered_as_a_model_is_typed():
    """A model cut after each line and mid-line: the buffers an editor sends while a person types.
    Three models: a graph of scalars, the two-layer net, and blocks."""
    for name in ("apple.graph", "two_layer_net.graph", "mlp_blocks.graph"):
        model = ROOT / "models" / name
        text = model.read_text()
        ends = [i for i, c in enumerate(text) if c == "\n"]
        middles = [(start + end) // 2 for start, end in zip([0, *ends], ends)][1::2]  # every other line, half typed
        cuts = sorted(set(ends) | set(middles))
        for cut in cuts:
            every_request(text[:cut], str(model))


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_request_is_answered_for_mutated_models(data):
    seeds = {p.name: p.read_bytes() for p in sorted((ROOT / "models").glob("*.graph"))}
    case = data.draw(mutated(seeds))
    every_request(case.data.decode("utf-8", "replace"), str(ROOT / "models" / case.seed))


def test_positions_count_utf16_units_as_lsp_does():
    text = "graph g {\n    input x = 2  # 𝑥, two UTF-16 units\n    y = mul(x, x)  # é\n    output y\n}\n"
    analysis = graphc_lsp.analyze(text.replace("mul(x, x)", "mul(x, z)"), "/tmp/u.graph")
    (problem,) = graphc_lsp.problems(analysis)
    assert problem.range == ((2, 15), (2, 16))
    source = graphc_lsp.Source("a𝑥b = 1", "/tmp/u.graph")
    assert graphc_lsp.word_at(source, 0, 3) == graphc_lsp.Word("b", 1, 3, 4)  # 𝑥 is two units, one character


def test_formatting_without_graphc_fmt_is_an_error_the_editor_shows(monkeypatch):
    needs("pygls", pytest_lsp is not None, INSTALL)
    from pygls.exceptions import JsonRpcInternalError

    monkeypatch.setitem(sys.modules, "graphc.fmt", None)  # `import graphc.fmt` raises ImportError
    with pytest.raises(JsonRpcInternalError, match="graphc fmt is not part of this graphc: cannot format"):
        graphc_lsp.format_edits(APPLE, "apple.graph", lsp)
