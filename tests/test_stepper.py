"""The step-through page (`graphc draw FILE -o steps.html`): the steps of the
apple graph with the book's numbers, the labels each step reveals, the page's
structure and embedded JSON, escaping of hostile text, every model rendering,
the command line; then the page in a real browser, headless Chromium, stepped
with the arrow keys and the buttons."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import graphc_cli, needs

import graphc
from graphc import stepper
from graphc.draw import find_dot

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ALL_MODELS = sorted(p.name for p in MODELS.glob("*.graph"))
APPLE = MODELS / "apple.graph"
HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 1">&amp;'


def run_program(path: Path, **feeds: Any) -> graphc.Program:
    program = graphc.compile_file(path)
    program.forward(**feeds)
    program.backward()
    return program


@pytest.fixture
def dot() -> None:
    needs("Graphviz", find_dot() is not None, "apt-get install graphviz")


# --- the steps ------------------------------------------------------------------


def test_apple_steps_are_the_plan_with_the_books_numbers():
    steps = stepper.walk(run_program(APPLE)).steps
    assert [(s.kind, s.title, s.node, s.rules, s.numbers) for s in steps] == [
        (
            "start",
            "Start: the inputs, params and consts",
            None,
            ("Press → (or Next) to run the forward plan one step at a time.",),
            ("apple = 100", "apple_num = 2", "tax = 1.1"),
        ),
        (
            "forward",
            "Forward step 1 of 2: mul computes apple_price",
            "n3",
            ("apple_price = mul(apple, apple_num) = mul(100, 2) = 200",),
            ("apple = 100", "apple_num = 2", "apple_price = 200"),
        ),
        (
            "forward",
            "Forward step 2 of 2: mul computes price",
            "n4",
            ("price = mul(apple_price, tax) = mul(200, 1.1) = 220",),
            ("apple_price = 200", "tax = 1.1", "price = 220"),
        ),
        ("seed", "Backward starts at the output: d_price = 1", "n4", ("d_price = 1",), ()),
        (
            "backward",
            "Backward step 1 of 2: mul at price, local gradients",
            "n4",
            ("d_apple_price = d_price * tax = 1 * 1.1 = 1.1", "d_tax = d_price * apple_price = 1 * 200 = 200"),
            ("d_price = 1", "tax = 1.1", "apple_price = 200", "d_apple_price = 1.1", "d_tax = 200"),
        ),
        (
            "backward",
            "Backward step 2 of 2: mul at apple_price, local gradients",
            "n3",
            (
                "d_apple = d_apple_price * apple_num = 1.1 * 2 = 2.2",
                "d_apple_num = d_apple_price * apple = 1.1 * 100 = 110",
            ),
            ("d_apple_price = 1.1", "apple_num = 2", "apple = 100", "d_apple = 2.2", "d_apple_num = 110"),
        ),
    ]


def test_apple_labels_appear_at_the_step_that_computes_them():
    labels = stepper.walk(run_program(APPLE)).labels
    # Edges in the diagram's order: apple, apple_num -> ×; apple_price, tax -> ×; price -> output.
    assert sorted((label.step, label.element, label.kind, label.text) for label in labels) == [
        (0, "e0", "value", "100"),
        (0, "e1", "value", "2"),
        (0, "e3", "value", "1.1"),
        (1, "e2", "value", "200"),
        (2, "e4", "value", "220"),
        (3, "e4", "grad", "1"),
        (4, "e2", "grad", "1.1"),
        (4, "e3", "grad", "200"),
        (5, "e0", "grad", "2.2"),
        (5, "e1", "grad", "110"),
    ]


def test_fan_out_shows_each_share_and_the_running_total():
    found = stepper.walk(run_program(MODELS / "fanout.graph"))
    last = found.steps[-1]
    assert last.rules == ("d_x += d_square * x = 1 * 3 = 3", "d_x += d_square * x = 1 * 3 = 3")
    assert last.numbers == ("d_square = 1", "x = 3", "d_x += 3, so d_x = 7", "d_x += 3, so d_x = 10")
    # x's node shows its total once its last share is in.
    totals = [label for label in found.labels if label.element.startswith("n")]
    assert [(t.text, t.step) for t in totals] == [("grad 10", len(found.steps) - 1)]


def test_an_infinite_gradient_is_flagged_as_the_diagram_flags_it():
    program = graphc.compile_source(
        "graph g {\n input x = 0\n const c = 2\n y = log(x)\n z = mul(y, c)\n output z\n}\n"
    )
    program.forward()
    program.backward()
    found = stepper.walk(program)
    assert found.steps[-1].rules == ("d_x = d_y / x = 2 / 0 = inf",)
    assert [(label.text, label.step) for label in found.labels if label.kind == "grad"] == [
        ("⚠ inf", 5),
        ("2", 4),
        ("1", 3),
    ]


def test_an_output_that_is_an_input_has_only_its_seed_to_show():
    program = graphc.compile_source("graph g {\n input x = 3\n output x\n}\n")
    program.forward()
    program.backward()
    found = stepper.walk(program)
    assert [(s.kind, s.rules) for s in found.steps] == [
        ("start", ("Press → (or Next) to run the forward plan one step at a time.",)),
        ("seed", ("d_x = 1",)),
    ]
    assert [(label.kind, label.text, label.step) for label in found.labels] == [("value", "3", 0), ("grad", "1", 1)]


def test_feeds_change_the_numbers():
    found = stepper.walk(run_program(APPLE, apple=150))
    assert found.steps[1].rules == ("apple_price = mul(apple, apple_num) = mul(150, 2) = 300",)


def test_tensors_are_summarised_by_shape_a_few_entries_mean_and_norm():
    assert stepper.brief(np.arange(12.0).reshape(3, 4)) == "[3, 4]: 0, 1, 2, … (mean 5.5, norm 22.5)"
    assert stepper.brief(np.array([1.5, -2.0])) == "[1.5, -2]"
    assert stepper.brief(np.float64(1.1)) == "1.1"
    assert stepper.brief(np.ones((2, 3), dtype=bool)) == "[2, 3]: 1, 1, 1, … (mean 1, norm 2.45)"
    assert stepper.brief(np.array([np.nan, 1, 2, 3, 4])) == "[5]: NaN, 1, 2, … (mean 2.5, norm 5.48, 1 NaN)"


def test_rules_get_numbers_only_when_every_name_is_a_scalar():
    scalars = {"d_y": np.float64(2.0), "W": np.float64(3.0), "x": np.ones(5)}
    assert stepper._with_numbers("d_x = d_y * W", "d_y * W", scalars, 6.0) == "d_x = d_y * W = 2 * 3 = 6"
    assert stepper._with_numbers("d_x = d_y * x", "d_y * x", scalars, np.ones(5)) == "d_x = d_y * x"
    assert stepper._with_numbers("d_W = d_y @ W.T", "d_y @ W.T", scalars, 6.0) == "d_W = d_y @ W.T"
    # Functions called and attributes named are not values, even when a value has their name.
    names = {"d_y": np.float64(2.0), "sum": np.float64(9.0), "axis": np.float64(9.0)}
    assert (
        stepper._with_numbers("d = sum(d_y, axis=0)", "sum(d_y, axis=0)", names, 2.0)
        == "d = sum(d_y, axis=0) = sum(2, axis=0) = 2"
    )


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_model_walks_forward_then_backward(model):
    program = run_program(MODELS / model)
    found = stepper.walk(program)
    kinds = [s.kind for s in found.steps]
    assert kinds == ["start"] + ["forward"] * len(program.plan.forward) + ["seed"] + ["backward"] * len(
        program.plan.backward
    )
    # Every value and gradient the diagram draws is revealed by a step.
    drawn = sum((e.value is not None) + (e.grad is not None) for e in found.diagram.edges)
    drawn += sum(n.grad is not None for n in found.diagram.nodes)
    assert len(found.labels) == drawn
    assert all(0 <= label.step < len(found.steps) for label in found.labels)


# --- the page -----------------------------------------------------------------------


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse_page(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    tags.close()
    return tags


def test_the_page_embeds_the_svg_the_steps_as_json_and_one_script(dot):
    program = run_program(APPLE)
    found = stepper.walk(program)
    text = stepper.steps_page(program)
    tags = parse_page(text)
    names = [tag for tag, _ in tags.tags]
    assert names.count("svg") == 1 and names.count("script") == 2
    assert [attrs.get("type") for tag, attrs in tags.tags if tag == "script"] == ["application/json", None]
    data, script = tags.scripts
    assert json.loads(data) == [
        {"kind": s.kind, "title": s.title, "node": s.node, "rules": list(s.rules), "numbers": list(s.numbers)}
        for s in found.steps
    ]
    assert script == stepper.SCRIPT
    # Nothing is loaded from anywhere: no src or href, and a policy that runs only this script.
    assert not any("src" in attrs or "href" in attrs for _, attrs in tags.tags)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = [a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert policy == [f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"]
    # Each label drawn is marked once, with the step that reveals it.
    marked = sorted(
        (int(attrs["data-step"] or ""), attrs["class"])
        for tag, attrs in tags.tags
        if tag == "text" and "data-step" in attrs
    )
    assert marked == sorted((label.step, f"stepped {label.kind}") for label in found.labels)
    assert {"first", "back", "next", "last", "counter", "title", "rule", "numbers"} <= {
        attrs.get("id") for _, attrs in tags.tags
    }


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_model_renders_with_every_label_marked(model, dot):
    program = run_program(MODELS / model)
    found = stepper.walk(program)
    tags = parse_page(stepper.steps_page(program))
    marked = [attrs for tag, attrs in tags.tags if tag == "text" and "data-step" in attrs]
    assert len(marked) == len(found.labels)
    assert len(json.loads(tags.scripts[0])) == len(found.steps)


def test_hostile_text_stays_text(dot):
    """Names come from people's files: whatever text reaches the page (a title,
    a rule, a number, the SVG's labels) cannot open a tag or a script."""
    found = stepper.walk(run_program(APPLE))
    steps = tuple(dataclasses.replace(s, title=HOSTILE, rules=(HOSTILE,), numbers=(HOSTILE,)) for s in found.steps)
    diagram = dataclasses.replace(
        found.diagram,
        title=HOSTILE,
        nodes=tuple(dataclasses.replace(n, name=HOSTILE) for n in found.diagram.nodes),
    )
    hostile = dataclasses.replace(found, title=HOSTILE, steps=steps, diagram=diagram)
    text = stepper.page(hostile, stepper.steps_svg(hostile))
    tags = parse_page(text)
    assert [tag for tag, _ in tags.tags].count("script") == 2
    assert not any(tag == "img" for tag, _ in tags.tags)
    assert "</script><script>window" not in text
    assert all(s["title"] == HOSTILE and s["rules"] == [HOSTILE] for s in json.loads(tags.scripts[0]))


def test_tagged_dot_gives_every_node_and_edge_an_id():
    found = stepper.walk(run_program(APPLE))
    dot_text = stepper.tagged_dot(found.diagram)
    assert '  n0 -> n3 [id="e0", ' in dot_text
    assert '  n4 -> out0 [id="e4", ' in dot_text
    assert '  n3 [id="n3", ' in dot_text
    assert '  out0 [id="out0", ' in dot_text


# --- the command line -----------------------------------------------------------------


def test_draw_writes_the_page(tmp_path, capsys, dot):
    out = tmp_path / "steps.html"
    status, stdout, stderr = graphc_cli(capsys, "draw", APPLE, "-o", out, "--set", "apple=150")
    assert (status, stdout, stderr) == (0, "", f"wrote {out}\n")
    data = json.loads(parse_page(out.read_text()).scripts[0])
    assert data[2]["rules"] == ["price = mul(apple_price, tax) = mul(300, 1.1) = 330"]
    assert [p.name for p in tmp_path.iterdir()] == ["steps.html"]  # no temporary left beside it


def test_a_hostile_file_name_and_comment_do_not_reach_the_page(tmp_path, capsys, dot):
    source = APPLE.read_text().replace("# 2 apples", f"# {HOSTILE} 2 apples")
    graph = tmp_path / "<script>alert(1)<\\script>.graph"
    graph.write_text(source)
    out = tmp_path / "steps.html"
    assert graphc_cli(capsys, "draw", graph, "-o", out)[0] == 0
    text = out.read_text()
    tags = parse_page(text)
    assert [tag for tag, _ in tags.tags].count("script") == 2
    assert "alert" not in text and "pwned" not in text


@pytest.mark.parametrize(
    ("flags", "flag"), [(["--collapse"], "--collapse"), (["--plan", "backward"], "--plan backward")]
)
def test_draw_refuses_what_a_page_cannot_show(tmp_path, capsys, flags, flag):
    out = tmp_path / "steps.html"
    status, stdout, stderr = graphc_cli(capsys, "draw", APPLE, "-o", out, *flags)
    assert (status, stdout) == (2, "")
    assert stderr == (
        f"graphc draw: error[E505]: {flag} does not apply to a step-through page\n"
        "hint: the page draws every value of the graph and steps through forward, then backward\n"
    )
    assert not out.exists()


# --- in a real browser ------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDTH, HEIGHT = 1000, 700


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, from the OS packages; nothing downloaded."""
    needs("Chromium", CHROMIUM is not None and CHROMEDRIVER is not None, "apt-get install chromium chromium-driver")
    needs("selenium", importlib.util.find_spec("selenium") is not None, "pip install -e '.[test]'")
    needs("Graphviz", find_dot() is not None, "apt-get install graphviz")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--force-device-scale-factor=1",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def apple_page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "steps.html"
    stepper.write_steps_page(run_program(APPLE), path)
    return path


SHOWN = """
function texts(selector) {
  return Array.from(document.querySelectorAll(selector))
    .filter(function (e) { return getComputedStyle(e).visibility === "visible"; })
    .map(function (e) { return e.textContent; })
    .sort();
}
return {
  "counter": document.getElementById("counter").textContent,
  "rule": document.getElementById("rule").textContent,
  "node": Array.from(document.querySelectorAll("#diagram .current")).map(function (e) { return e.id; }),
  "new values": texts(".stepped.value.fresh"),
  "new grads": texts(".stepped.grad.fresh"),
  "values": texts(".stepped.value"),
  "grads": texts(".stepped.grad"),
};
"""


def shown(driver: Any) -> dict[str, Any]:
    """What the page shows: the counter, the rule, the highlighted node, and the
    labels the browser renders visible by kind, all and those the current step
    revealed (fresh). One round trip to the browser."""
    return driver.execute_script(SHOWN)


def test_stepping_through_the_apple_page(browser, apple_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(apple_page.as_uri())
    body = browser.find_element(By.TAG_NAME, "body")

    def key(name: str) -> dict[str, Any]:
        body.send_keys(name)
        return shown(browser)

    def click(button: str) -> dict[str, Any]:
        browser.find_element(By.ID, button).click()
        return shown(browser)

    start = shown(browser)
    assert start == {
        "counter": "step 0 of 5",
        "rule": "Press → (or Next) to run the forward plan one step at a time.",
        "node": [],
        "new values": ["1.1", "100", "2"],
        "new grads": [],
        "values": ["1.1", "100", "2"],
        "grads": [],
    }
    step1 = key(Keys.ARROW_RIGHT)
    assert (step1["counter"], step1["node"], step1["new values"]) == ("step 1 of 5", ["n3"], ["200"])
    assert step1["rule"] == "apple_price = mul(apple, apple_num) = mul(100, 2) = 200"
    step2 = click("next")
    assert (step2["node"], step2["new values"], step2["values"]) == (["n4"], ["220"], ["1.1", "100", "2", "200", "220"])
    seed = key(Keys.ARROW_RIGHT)
    assert (seed["rule"], seed["new grads"], seed["grads"]) == ("d_price = 1", ["1"], ["1"])
    step4 = click("next")
    assert (step4["node"], step4["new values"], step4["new grads"]) == (["n4"], [], ["1.1", "200"])
    assert (
        step4["rule"] == "d_apple_price = d_price * tax = 1 * 1.1 = 1.1\nd_tax = d_price * apple_price = 1 * 200 = 200"
    )
    step5 = key(Keys.ARROW_RIGHT)
    assert (step5["counter"], step5["node"], step5["new grads"]) == ("step 5 of 5", ["n3"], ["110", "2.2"])
    assert step5["grads"] == ["1", "1.1", "110", "2.2", "200"]
    assert not browser.find_element(By.ID, "next").is_enabled()
    assert key(Keys.ARROW_RIGHT) == step5  # the last step stays the last

    # Back again: the last step's gradients go, the previous ones are fresh again.
    assert key(Keys.ARROW_LEFT) == step4
    assert click("back") == seed
    assert key(Keys.HOME) == start
    assert not browser.find_element(By.ID, "back").is_enabled()
    assert key(Keys.END) == step5
    assert click("first") == start
    assert click("last") == step5


def test_a_screenshot_of_the_page_is_a_picture(browser, apple_page):
    from PIL import Image
    from selenium.webdriver.common.keys import Keys

    browser.get(apple_page.as_uri())
    browser.find_element("tag name", "body").send_keys(Keys.END)
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    assert image.size == (width, height) and width > WIDTH * 0.9
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # text, the graph and its red gradients, not one colour
    reds = sum(count for count, (r, g, b) in colours if r > 150 and g < 100 and b < 100)
    assert reds > 50  # the gradients, in red


def test_hostile_text_does_not_run_in_the_browser(browser, tmp_path, dot):
    found = stepper.walk(run_program(APPLE))
    steps = tuple(dataclasses.replace(s, title=HOSTILE, rules=(HOSTILE,)) for s in found.steps)
    hostile = dataclasses.replace(found, title=HOSTILE, steps=steps)
    path = tmp_path / "hostile.html"
    path.write_text(stepper.page(hostile, stepper.steps_svg(hostile)))
    browser.get(path.as_uri())
    from selenium.webdriver.common.by import By

    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_element(By.ID, "rule").text == HOSTILE
    assert re.match(r"step 0 of \d+", browser.find_element(By.ID, "counter").text)
