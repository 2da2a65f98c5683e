"""The examples of README.md and docs/*.md are what graphc prints today, on
any machine, and every command in them works in order from a fresh clone.
docs/examples.py runs them; these tests run it, and check its rules."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


examples = _load("graphc_doc_examples", ROOT / "docs" / "examples.py")


def _report(results) -> str:
    lines = []
    for result in results:
        if result.error is not None:
            lines.append(result.error)
        elif result.fresh != result.text:
            lines.append(f"{result.doc}: stale examples at lines {list(result.stale)}\n{result.diff()}")
    return "\n".join(lines)


# --- the documents ------------------------------------------------------------------


def test_every_block_that_shows_a_command_has_a_marker():
    for doc in examples.documents():
        text = (ROOT / doc).read_text(encoding="utf-8")
        for block in examples.outside_bench_regions(text, examples.blocks(text)):
            examples.lint(block, doc)  # raises ExampleError


# The pages whose examples take longest (training on MNIST; every command's
# output; the internals' and ONNX's Python sessions): a minute of the fast
# loop's two, so they are checked with the slow tests (CI runs both). The
# fast loop keeps the README and the language, errors, speed and development pages.
SLOW_PAGES = ["docs/training.md", "docs/commands.md", "docs/internals.md", "docs/interop.md"]


def test_every_example_is_current(tmp_path):
    """The updater's own check (`python docs/examples.py --check PAGE...`), run from
    another directory: it changes nothing, prints nothing and exits 0."""
    pages = [d for d in examples.documents() if d not in SLOW_PAGES]
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples.py"), "--check", *pages],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout) == (0, ""), result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []
    checked = sum(
        1
        for page in pages
        for b in examples.blocks((ROOT / page).read_text(encoding="utf-8"))
        if b.lang == "console" and b.marker is not None and b.marker.kind == "run"
    )
    assert checked >= 10  # the pages hold console blocks to run, not none of them


@pytest.mark.slow
def test_every_example_of_the_slow_pages_is_current():
    assert set(SLOW_PAGES) <= set(examples.documents())
    report = _report(examples.check_documents(SLOW_PAGES))
    assert not report, report + "\nrun `python docs/examples.py` to refresh them"


# Another BLAS thread count, terminal width, hash seed (set and dict order) and
# time zone: a checked example must print the same under any of them.
ELSEWHERE = [
    {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    | {"COLUMNS": "40", "PYTHONHASHSEED": "1", "TZ": "UTC"},
    {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    | {"COLUMNS": "200", "PYTHONHASHSEED": "2", "TZ": "Pacific/Kiritimati"},
]


@pytest.mark.slow
@pytest.mark.parametrize("env", ELSEWHERE, ids=["1-thread-narrow", "2-threads-wide"])
def test_every_example_prints_the_same_under_other_thread_counts_and_widths(env):
    report = _report(examples.check_documents(examples.documents(), env))
    assert not report, f"under {env}:\n{report}"


def test_every_page_of_docs_is_checked_and_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert {"language.md", "commands.md", "training.md", "internals.md", "speed.md", "errors.md"} <= set(pages)
    assert "development.md" in pages
    for page in pages:
        assert f"(docs/{page})" in readme, f"README.md does not link docs/{page}"
    assert examples.documents() == ["README.md", *(f"docs/{p}" for p in pages)]


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv")]
    assert commands[0].endswith("pip install . && graphc run models/apple.graph")
    assert commands[1].endswith('pip install ".[test]" && pytest')
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
    first_block = examples.blocks(text)[0]
    assert first_block.body == commands[0] + "\n"


def test_the_speed_figures_are_written_by_the_benchmarks():
    text = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    for name in ("train_mnist", "compile_scale"):
        begin = text.index(f"<!-- bench {name}: written by `python bench/{name}.py --write-docs`")
        end = text.index(f"<!-- end bench {name} -->")
        region = text[begin:end]
        assert "Measured on " in region and "load average" in region
        assert re.search(rf"^\$ (\w+=\d+ )*python bench/{name}\.py", region, re.M)


# --- the checker's rules, on made-up pages ------------------------------------------------


def check(text: str, env=None):
    return examples.check_document("page.md", env, text=text)


def test_a_console_block_without_a_marker_is_an_error():
    result = check("Hello\n\n```console\n$ graphc check models/apple.graph\n```\n")
    assert result.error == "page.md:3: a ```console block needs a marker such as <!-- run --> before it"


@pytest.mark.parametrize("lang", ["sh", "python", "pycon"])
def test_every_runnable_block_needs_a_marker(lang):
    result = check(f"```{lang}\nx\n```\n")
    assert result.error == f"page.md:1: a ```{lang} block needs a marker such as <!-- run --> before it"


def test_a_transcript_outside_a_console_block_is_an_error():
    result = check("```\n$ graphc run models/apple.graph\nprice 220\n```\n")
    assert result.error == "page.md:1: a command with its output belongs in a ```console block, with a marker"


def test_console_blocks_are_always_run():
    result = check("<!-- not run: too slow -->\n```console\n$ graphc run models/apple.graph\n```\n")
    assert result.error == "page.md:2: a ```console block shows output: run it"
    result = check("<!-- run; quickly -->\n```console\n$ graphc run models/apple.graph\n```\n")
    assert result.error == "page.md:2: unknown marker option `quickly`"
    result = check("<!-- run: graphc run models/apple.graph -->\n```console\n$ graphc run models/apple.graph\n```\n")
    assert result.error == "page.md:2: write `<!-- run -->`: the command goes in the block, after `$ `"


def test_a_stale_block_is_refreshed_and_a_current_one_left_alone():
    page = "<!-- run -->\n```console\n$ graphc check docs/mistakes/typo.graph\nold\n```\n"
    result = check(page.replace("<!-- run -->", "<!-- run; exit 2 -->"))
    assert result.error is None and result.stale == (2,)
    assert "error[E103]: unknown op `rleu`" in result.fresh
    again = check(result.fresh)
    assert again.stale == () and again.fresh == again.text


def test_a_command_must_exit_as_the_marker_says():
    result = check("<!-- run -->\n```console\n$ graphc check docs/mistakes/typo.graph\n```\n")
    assert result.error.startswith("page.md:2: `graphc check docs/mistakes/typo.graph` exited with 2, not 0:\n")


def test_blocks_run_in_order_in_a_scratch_copy():
    page = (
        "<!-- run -->\n```sh\nmkdir -p out\ngraphc compile models/apple.graph --emit python -o out/apple.py\n```\n\n"
        "<!-- run -->\n```console\n$ ls out\n```\n"
    )
    result = check(page)
    assert result.error is None
    assert "```console\n$ ls out\napple.py\n```" in result.fresh
    assert not (ROOT / "out").exists()  # never in the checkout


def test_output_that_names_the_scratch_directory_is_an_error():
    result = check("<!-- run -->\n```console\n$ pwd\n```\n")
    assert "`pwd` prints the path of the scratch directory" in result.error
    result = check("<!-- run -->\n```pycon\n>>> import sys\n>>> print(sys.executable)\n```\n")
    assert "the session prints the path of" in result.error


def test_a_pycon_session_is_run_statement_by_statement():
    page = "<!-- run -->\n```pycon\n>>> x = 2\n>>> for i in range(x):\n...     print(i)\n>>> x * 21\n>>> 1 / 0\n```\n"
    result = check(page)
    assert result.error is None
    assert result.fresh.split("```pycon\n")[1].split("```")[0] == (
        ">>> x = 2\n>>> for i in range(x):\n...     print(i)\n0\n1\n>>> x * 21\n42\n>>> 1 / 0\n"
        "Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero\n"
    )


def test_a_file_block_is_the_file():
    result = check("<!-- file: models/apple.graph -->\n```\nold\n```\n")
    assert result.fresh.split("```\n")[1] == (ROOT / "models" / "apple.graph").read_text(encoding="utf-8")


def test_an_excerpt_is_refreshed_between_its_first_and_last_lines():
    page = "<!-- excerpt: graphc compile models/apple.graph -->\n```\nforward (2 steps)\nold\n  2  price = mul(apple_price, tax)        f64  saves apple_price, tax  frees apple_price\n```\n"
    result = check(page)
    assert result.error is None
    assert "  1  apple_price = mul(apple, apple_num)  f64  saves apple, apple_num\n" in result.fresh
    missing = check(page.replace("forward (2 steps)", "forward (3 steps)"))
    assert "no longer prints the lines `forward (3 steps)`" in missing.error


# --- comparing by the marker's rules ----------------------------------------------------


def marker(text: str):
    return examples.Marker.parse(text)


def test_numbers_within_a_tolerance():
    rule = marker("<!-- run; numbers within 1e-6 -->")
    shown = "x         [3, 784]          3.48e-11         7.06e-08  ok\n"
    assert examples.matches(rule, shown, "x  [3, 784]  3.5e-11  9.1e-08  ok\n")  # columns may shift
    assert not examples.matches(rule, shown, "x  [3, 784]  3.5e-11  2e-06  ok\n")
    assert not examples.matches(rule, shown, "x  [3, 785]  3.48e-11  7.06e-08  ok\n")
    assert not examples.matches(rule, shown, "x  [3, 784]  3.48e-11  7.06e-08  FAIL\n")
    assert not examples.matches(marker("<!-- run -->"), shown, "x  [3, 784]  3.49e-11  7.06e-08  ok\n")


def test_timings_masked():
    rule = marker("<!-- run; timings masked -->")
    shown = "epoch 1/2  iter 600  loss 0.7352     0.5 s\ntrained 1200 iterations in 0.9 s (codegen): 1458 it/s\n"
    fresh = "epoch 1/2  iter 600  loss 0.7352    12.5 s\ntrained 1200 iterations in 20.1 s (codegen): 60 it/s\n"
    assert examples.matches(rule, shown, fresh)
    assert not examples.matches(rule, shown, fresh.replace("0.7352", "0.7353"))
    assert not examples.matches(rule, shown, fresh.replace("1200", "1300"))
    json_rule = marker("<!-- run; timings masked; numbers within 1e-6 -->")
    shown = '{"loss": 0.735199731464, "seconds": 0.505, "eval_seconds": 0.1, "iters_per_second": 3087.4}'
    fresh = '{"loss": 0.735199731465, "seconds": 9.1, "eval_seconds": 2.2, "iters_per_second": 17.0}'
    assert examples.matches(json_rule, shown, fresh)
    assert not examples.matches(json_rule, shown, fresh.replace("0.735199731465", "0.7353"))


def test_figures_vary():
    rule = marker("<!-- run; figures vary -->")
    shown = "numpy BLAS: openblas 0.3.31 (SkylakeX), 2 threads\naffine1  affine  0.121\nloss  softmax_loss  0.024\n"
    fresh = "numpy BLAS: mkl 2024 (Haswell), 1 thread\nloss  softmax_loss  0.0031\naffine1  affine  0.3\n"
    assert examples.matches(rule, shown, fresh)
    assert not examples.matches(rule, shown, fresh.replace("softmax_loss", "sigmoid"))


# --- the updater --------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = [
        line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")
    ]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_the_pages_lead_somewhere():
    for doc in examples.documents():
        path = ROOT / doc
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{doc}: link to {target}: no such file"
            if anchor:
                assert anchor in _anchors(linked), f"{doc}: link to {target}: no such heading"


# --- the speed page's regions ------------------------------------------------------------


@pytest.fixture
def bench_docs(monkeypatch, tmp_path):
    """bench/_docs.py, writing into a copy of the speed page."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    docs = _load("_docs", ROOT / "bench" / "_docs.py")
    page = tmp_path / "speed.md"
    page.write_text((ROOT / "docs" / "speed.md").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(docs, "SPEED", page)
    return docs, page


def test_a_benchmark_rewrites_only_its_own_region(bench_docs):
    docs, page = bench_docs
    before = page.read_text(encoding="utf-8")
    quiet = docs.Conditions(date="2030-01-02", machine="a CPU, 2 cores", load_before=0.1, load_after=2.2, cores=2)
    docs.write_docs("compile_scale", "python bench/compile_scale.py", "the table\n", quiet)
    after = page.read_text(encoding="utf-8")
    begin = after.index(docs.begin_marker("compile_scale"))
    end = after.index(docs.end_marker("compile_scale")) + len(docs.end_marker("compile_scale"))
    assert after[begin:end] == (
        "<!-- bench compile_scale: written by `python bench/compile_scale.py --write-docs`; do not edit -->\n"
        "Measured on 2030-01-02 on a CPU, 2 cores.\n"
        "The machine was quiet: 1-minute load average 0.10 before the run and 2.20 after it, on 2 cores "
        "(quiet means below 0.5 before, and below 2.5 after, the benchmark's own threads included).\n"
        "\n```text\n$ python bench/compile_scale.py\nthe table\n```\n"
        "<!-- end bench compile_scale -->"
    )
    old_begin = before.index(docs.begin_marker("compile_scale"))
    old_end = before.index(docs.end_marker("compile_scale")) + len(docs.end_marker("compile_scale"))
    assert after[:begin] == before[:old_begin] and after[end:] == before[old_end:]


def test_a_busy_machine_is_named_busy(bench_docs):
    docs, _ = bench_docs
    for before, after in ((0.7, 1.0), (0.1, 2.6)):
        busy = docs.Conditions(date="2030-01-02", machine="m", load_before=before, load_after=after, cores=2)
        assert not busy.quiet
        assert "The machine was **busy** (other work ran alongside" in busy.describe()


def test_the_compile_benchmark_writes_the_speed_page(bench_docs, capsys, monkeypatch):
    docs, page = bench_docs
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # named in the command line, as it was run
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    compile_scale = _load("compile_scale", ROOT / "bench" / "compile_scale.py")
    assert compile_scale.main(["--sizes", "40", "--repeat", "1", "--write-docs"]) == 0
    text = page.read_text(encoding="utf-8")
    region = text[text.index(docs.begin_marker("compile_scale")) : text.index(docs.end_marker("compile_scale"))]
    assert "$ OMP_NUM_THREADS=3 python bench/compile_scale.py --sizes 40 --repeat 1 --write-docs\nbest of 1" in region
    assert "chain         40" in region and "dag           40" in region
    assert capsys.readouterr().out.endswith(f"wrote {page}\n")
