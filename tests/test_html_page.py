"""report.html (actbench.report.html_page): what a browser shows, against the rows it was given.

The page tests open the written file in a real headless Chromium (tests/browser.py) and read the
leaderboard back from the DOM: the rows in the given order with the given accuracies, the order
after a click or a `#sort=` fragment against a Python sort of the same rows, no request beyond
the file, names with markup in them shown as text. The rest needs no browser: the functions'
values against NumPy in float64, the JSON a page carries, the atomic rewrite.
"""

from __future__ import annotations

import base64
import html.parser
import json
import math
import os
import shutil
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from actbench.report import html_page
from tests import browser

NAN = math.nan
TRICKY = "min(x,</script><b>x)"  # not a function: a name that would end the script element
QUOTED = 'a"b&c<i>'


def _rows() -> list[dict]:
  """Leaderboard rows as a store gives them, deliberately not sorted by any column: ties, NaN,
  an accuracy whose percent ends on a 5 (98.125: Python rounds to even, JavaScript up), failed
  and stopped functions, names with markup in them."""
  specs = [  # activation, validation, test, loss, diverged, stopped, seeds, runtime
      ("max(x,sigmoid(x))", 0.9750, 0.9600, 0.081, False, "", 3, 12.5),
      ("relu(x)", 0.9712, 0.98125, 0.090, False, "", 3, 10.25),
      ("tanh(x)", 0.9701, 0.9600, 0.120, False, "", 3, 11.0),
      (TRICKY, 0.9650, 0.9500, 0.2, False, "", 2, 9.0),
      ("swish(x)", 0.9640, NAN, 0.095, False, "", 3, 13.0),
      ("elu(x)", 0.9600, 0.9700, 0.101, False, 3, 1, 2.5),
      (QUOTED, 0.9550, 0.9100, NAN, False, 1, 1, 1.0),
      ("reciprocal(x)", 0.9400, 0.9350, 0.300, False, 3, 1, 3.0),
      ("pow(x,x)", NAN, NAN, NAN, True, "", 3, 4.0),
      ("exp(exp(x))", NAN, 0.1000, NAN, True, "", 3, 0.5),
  ]
  keys = ("activation", "validation_accuracy", "test_accuracy", "train_loss", "diverged",
          "stopped_at_epoch", "seeds", "runtime_s")
  return [{"rank": rank, **dict(zip(keys, spec))} for rank, spec in enumerate(specs, 1)]


def _curves() -> dict[str, list[float]]:
  return {"max(x,sigmoid(x))": [0.5, 0.8, 0.9, 0.97], "relu(x)": [0.4, 0.7, 0.95, 0.97],
          "elu(x)": [0.3, 0.6, 0.96, NAN], "pow(x,x)": [0.1, NAN, NAN, NAN]}


def _png(width: int = 3, height: int = 2) -> bytes:
  """A tiny valid PNG, written by hand (no matplotlib for a test of the page)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  raw = b"".join(b"\x00" + bytes([200, 30, 30] * width) for _ in range(height))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                             0, 0))
          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _percent(value: float) -> str:
  """The page's percent, formatted here on its own: two decimals, '-' for NaN."""
  return "-" if math.isnan(value) else "%.2f" % (value * 100)


def _python_sort(rows: list[dict], key: str, descending: bool) -> list[str]:
  """Names in the order of a stable Python sort by `key`, blanks (NaN, '') last either way."""
  def blank(row):
    value = row[key]
    return value == "" or (isinstance(value, float) and math.isnan(value))
  present = [row for row in rows if not blank(row)]
  ordered = sorted(present, key=lambda row: row[key], reverse=descending)
  return [row["activation"] for row in ordered + [row for row in rows if blank(row)]]


# ---------------------------------------------------------------------------------------------
# Without a browser.


def test_function_samples_match_numpy_in_float64():
  x = np.linspace(-5, 5, 41)  # holds 0 and the negative integers: inf and finite pow(x, x)
  with np.errstate(all="ignore"):
    expected = np.stack([
        np.maximum(x, 0.0),
        np.tanh(x),
        np.maximum(x, 1.0 / (1.0 + np.exp(-x))),
        np.power(x, x),  # NaN for negative x off the integers
        1.0 / x,         # inf at 0
        np.full_like(x, np.nan),  # a name that does not parse
    ])
  names = ["relu(x)", "tanh(x)", "max(x,sigmoid(x))", "pow(x,x)", "reciprocal(x)", TRICKY]
  values = html_page.function_samples(names, x)
  assert values.dtype == np.float64 and values.shape == (len(names), x.size)
  np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-15, equal_nan=True)
  assert np.isnan(values[3]).sum() == 15 and np.isinf(values[4]).sum() == 1


def test_shape_levels_leave_gaps_where_a_function_is_not_finite():
  rows = _rows()
  data = html_page.page_data(rows, shapes=True)
  x = np.linspace(*html_page.X_RANGE, html_page.SHAPE_POINTS)
  with np.errstate(all="ignore"):
    reference = {"relu(x)": np.maximum(x, 0), "pow(x,x)": np.power(x, x),
                 "reciprocal(x)": 1 / x}
  for index, row in enumerate(rows):
    levels = np.asarray(data["shapes"][index])
    assert levels.shape == (html_page.SHAPE_POINTS,)
    assert levels.min() >= -1 and levels.max() <= html_page.LEVELS
    if row["activation"] in reference:
      np.testing.assert_array_equal(levels < 0, ~np.isfinite(reference[row["activation"]]))
  relu = np.asarray(data["shapes"][1])
  assert relu[0] == relu[20] < relu[30] < relu[40]  # flat, then rising: the shape, not noise
  assert data["shape_ranges"][3] == [None, None]  # TRICKY: nothing to draw, nothing to crash


def test_row_percentiles_match_nanpercentile():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(300, 41)) * rng.lognormal(size=(300, 1))
  values[rng.random(values.shape) < 0.3] = np.nan
  values[3] = np.nan           # nothing finite
  values[4, :40] = np.nan      # one value
  counts = np.isfinite(values).sum(axis=1)
  found = html_page._row_percentiles(values, counts, (0.01, 0.5, 0.99))
  with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # the all-NaN row
    expected = np.nanpercentile(values, [1, 50, 99], axis=1)
  np.testing.assert_allclose(np.stack(found), expected, rtol=1e-12, equal_nan=True)


def test_json_for_script_cannot_end_the_script_element():
  value = {"name": "</script><!-- <script>&amp;", "unicode": "x\u2028y\u00e9", "n": [1, 2.5]}
  text = html_page.json_for_script(value)
  assert not set("<>&") & set(text)
  assert json.loads(text) == value
  with pytest.raises(ValueError):  # NaN is not JSON: the page data carries null instead
    html_page.json_for_script({"x": NAN})


class _ScriptData(html.parser.HTMLParser):
  """The text of <script id="data"> as an HTML parser sees it (up to the first '</script')."""

  def __init__(self):
    super().__init__()
    self.inside, self.text, self.scripts = False, "", 0

  def handle_starttag(self, tag, attrs):
    if tag == "script":
      self.scripts += 1
      self.inside = ("id", "data") in attrs

  def handle_endtag(self, tag):
    self.inside = False

  def handle_data(self, data):
    if self.inside:
      self.text += data


def test_page_carries_the_rows_as_json_an_html_parser_reads_whole():
  rows = _rows()
  page = html_page.render(title="<t>", rows=rows, curves=_curves())
  parser = _ScriptData()
  parser.feed(page)
  assert parser.scripts == 2  # the data and the code: no name opened a script of its own
  data = json.loads(parser.text)
  assert [row[1] for row in data["rows"]] == [row["activation"] for row in rows]
  assert [row[2] for row in data["rows"]] == [
      None if math.isnan(row["validation_accuracy"]) else row["validation_accuracy"]
      for row in rows]
  assert data["curves"][2] is None and data["curves"][8] is not None  # by name, not position
  assert "<title>&lt;t&gt;</title>" in page


def test_figures_are_embedded_and_missing_files_left_out(tmp_path):
  png = _png()
  (tmp_path / "curve.png").write_bytes(png)
  page = html_page.render(title="t", rows=[], shapes=False, figures={
      "from a file": str(tmp_path / "curve.png"), "from bytes": png,
      "missing": str(tmp_path / "absent.png")})
  uris = [part.split('"', 1)[0] for part in page.split('<img src="')[1:]]
  assert len(uris) == 2 and "missing" not in page
  for uri in uris:
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_write_replaces_the_page_atomically(tmp_path):
  """A reader that reads the file over and over while it is rewritten, alternately with two
  pages of 1.5 MB, only ever sees one of the two, whole."""
  path = str(tmp_path / "report.html")
  pages = [html_page.render(title=title, rows=[], shapes=False,
                            recipe={"padding": title * 300_000}) for title in ("A", "B")]
  assert html_page.write(path, pages[0]) == path
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)  # readable, unlike mkstemp's 0600
  done, seen, torn = threading.Event(), [0, 0], []

  def reader():
    while not done.is_set():
      with open(path, encoding="utf-8") as f:
        text = f.read()
      if text in pages:
        seen[pages.index(text)] += 1
      else:
        torn.append(len(text))

  thread = threading.Thread(target=reader)
  thread.start()
  try:
    for i in range(200):
      html_page.write(path, pages[i % 2])
  finally:
    done.set()
    thread.join()
  assert not torn, f"{len(torn)} reads saw neither page, of lengths {torn[:5]}"
  assert min(seen) > 0, seen  # the reader did read both while they were being rewritten
  assert sorted(os.listdir(tmp_path)) == ["report.html"]  # no temporary file left behind


def test_write_removes_what_a_writer_killed_mid_write_left(tmp_path):
  path = str(tmp_path / "report.html")
  stale, fresh = tmp_path / ".report.html.old.tmp", tmp_path / ".report.html.new.tmp"
  stale.write_text("half a page")
  fresh.write_text("a live writer's page")  # another process writing right now
  old = time.time() - html_page.STALE_S - 60
  os.utime(stale, (old, old))
  html_page.write(path, "<html></html>")
  assert sorted(os.listdir(tmp_path)) == [".report.html.new.tmp", "report.html"]


# ---------------------------------------------------------------------------------------------
# In Chromium.


@pytest.fixture(scope="module")
def chrome():
  with browser.chromium() as instance:
    yield instance


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """report.html of _rows(), with curves, a figure, baselines, recipe and provenance."""
  directory = tmp_path_factory.mktemp("report")
  (directory / "search_curve.png").write_bytes(_png())
  page = html_page.render(
      title="digits <search>", rows=_rows(), curves=_curves(),
      figures={"Search curve": str(directory / "search_curve.png"), "Surrogate map": _png(5, 4),
               "Missing": str(directory / "missing.png")},
      baselines=[{"activation": "relu(x)", "rank": 2, "validation_accuracy": 0.9712,
                  "test_accuracy": 0.98125},
                 {"activation": "tanh(x)", "rank": 3, "validation_accuracy": 0.9701,
                  "test_accuracy": NAN}],
      recipe={"train.learning_rate": "0.01", "search.space": "binary(unary(x),unary(x))"},
      provenance={"data": "digits", "store": "<script>alert(1)</script>"},
      updated=time.time() - 600)
  return html_page.write(str(directory / "report.html"), page)


_TABLE = """() => {
  const keys = Array.from(document.querySelectorAll("#board thead th")).map(
      (th) => th.dataset.key || th.textContent);
  return Array.from(document.querySelectorAll("#board tbody tr")).map((tr) => {
    const cells = {};
    Array.from(tr.cells).forEach((td, i) => { cells[keys[i]] = td; });
    return {name: tr.querySelector(".fn").textContent,
            validation: cells.validation_accuracy.textContent,
            test: cells.test_accuracy.textContent, rank: cells.rank.textContent,
            className: tr.className, badge: (tr.querySelector(".badge") || {}).textContent || "",
            shape: Array.from(tr.querySelectorAll("td.plot")).map(
                (td) => (td.querySelector("path:not(.axis)") || {getAttribute: () => null})
                    .getAttribute("d"))};
  });
}"""


def _table(page) -> list[dict]:
  return page.page.evaluate(_TABLE)


def _names(page) -> list[str]:
  return [row["name"] for row in _table(page)]


def test_page_shows_the_rows_in_order_without_a_request_beyond_the_file(chrome, report,
                                                                        tmp_path):
  page = browser.open_page(chrome, report)
  rows = _rows()
  shown = _table(page)
  assert [row["name"] for row in shown] == [row["activation"] for row in rows]
  assert [row["rank"] for row in shown] == [str(row["rank"]) for row in rows]
  assert [row["validation"] for row in shown] == [_percent(r["validation_accuracy"])
                                                  for r in rows]
  assert [row["test"] for row in shown] == [_percent(r["test_accuracy"]) for r in rows]
  assert shown[1]["test"] == "98.12"  # rounded as Python rounds, not as JavaScript does
  # Failed and stopped functions are marked, the rest not.
  for row, given in zip(shown, rows):
    stopped = given["stopped_at_epoch"] != ""
    assert row["className"] == ("failed" if given["diverged"] else "stopped" if stopped else "")
    assert row["badge"] == ("failed" if given["diverged"] else
                            f"stopped at epoch {given['stopped_at_epoch']}" if stopped else "")
  # Each row's shape; a curve where one was given. reciprocal(x) is infinite at 0: two pieces.
  curves = _curves()
  for row in shown:
    assert (row["shape"][0] is None) == (row["name"] in (TRICKY, QUOTED))  # not functions
    assert (row["shape"][1] is not None) == (row["name"] in curves)
  by_name = {row["name"]: row for row in shown}
  assert by_name["relu(x)"]["shape"][0].count("M") == 1
  assert by_name["relu(x)"]["shape"][0].count("L") == html_page.SHAPE_POINTS - 1
  assert by_name["reciprocal(x)"]["shape"][0].count("M") == 2
  # Figures decoded from data: URIs; no other request than the file itself, no error.
  sizes = page.page.evaluate("""() => Array.from(document.querySelectorAll("figure img")).map(
      (img) => [img.alt, img.naturalWidth, img.naturalHeight])""")
  assert sizes == [["Search curve", 3, 2], ["Surrogate map", 5, 4]]
  assert page.requests and all(url == page.url or url.startswith("data:")
                               for url in page.requests), page.requests
  assert page.errors == []
  csp = page.page.evaluate("""() => document.querySelector(
      'meta[http-equiv="Content-Security-Policy"]').content""")
  assert csp == html_page.CSP and "default-src 'none'" in csp
  # The policy is in force: the page itself may not fetch, not even its own file.
  assert page.page.evaluate("fetch(location.href).then(() => 'fetched', () => 'blocked')") == \
      "blocked"
  assert "updated" in page.page.text_content("header") and "10 min ago" in page.page.text_content(
      "#age")
  screenshot = tmp_path / "report.png"
  page.page.screenshot(path=str(screenshot), full_page=True)
  assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  if os.environ.get("ACTBENCH_SCREENSHOT_DIR"):
    os.makedirs(os.environ["ACTBENCH_SCREENSHOT_DIR"], exist_ok=True)
    shutil.copy(screenshot, os.path.join(os.environ["ACTBENCH_SCREENSHOT_DIR"], "report.png"))
  page.page.close()


def test_names_and_values_with_markup_are_text(chrome, report):
  page = browser.open_page(chrome, report)
  p = page.page
  assert p.title() == "digits <search>"
  assert p.text_content("h1") == "digits <search>"
  assert TRICKY in _names(page) and QUOTED in _names(page)
  assert p.evaluate("document.querySelectorAll('#board b, #board i, body script').length") == 2
  assert p.evaluate("document.scripts.length") == 2
  provenance = p.evaluate("""() => Array.from(document.querySelectorAll("#provenance tr")).map(
      (tr) => [tr.cells[0].textContent, tr.cells[1].textContent])""")
  assert provenance == [["data", "digits"], ["store", "<script>alert(1)</script>"]]
  recipe = p.evaluate("""() => Array.from(document.querySelectorAll("#recipe tr")).map(
      (tr) => [tr.cells[0].textContent, tr.cells[1].textContent])""")
  assert recipe == [["train.learning_rate", "0.01"],
                    ["search.space", "binary(unary(x),unary(x))"]]
  baselines = p.evaluate("""() => Array.from(document.querySelectorAll("#baselines tbody tr"))
      .map((tr) => Array.from(tr.cells).map((td) => td.textContent))""")
  assert baselines == [["2", "relu(x)", "97.12", "98.12"], ["3", "tanh(x)", "97.01", "-"]]
  assert page.errors == []
  p.close()


def test_clicking_a_column_sorts_like_python_and_again_reverses(chrome, report):
  page = browser.open_page(chrome, report)
  rows = _rows()
  button = page.page.locator('#board th[data-key="test_accuracy"] button')
  button.click()  # accuracies sort best first: descending, NaN last
  assert _names(page) == _python_sort(rows, "test_accuracy", descending=True)
  assert page.page.evaluate("location.hash") == "#sort=-test_accuracy"
  button.click()
  assert _names(page) == _python_sort(rows, "test_accuracy", descending=False)
  assert page.page.get_attribute('#board th[data-key="test_accuracy"]', "aria-sort") == \
      "ascending"
  page.page.locator('#board th[data-key="activation"] button').click()
  assert _names(page) == _python_sort(rows, "activation", descending=False)
  assert page.page.get_attribute('#board th[data-key="test_accuracy"]', "aria-sort") is None
  assert page.errors == []
  page.page.close()


@pytest.mark.parametrize("fragment", ["#sort=train_loss", "#sort=-train_loss",
                                      "#sort=stopped_at_epoch", "#sort=-runtime_s",
                                      "#sort=-activation", "#sort=diverged"])
def test_sort_fragment_applies_on_load(chrome, report, fragment):
  page = browser.open_page(chrome, report, fragment)
  key = fragment.split("=", 1)[1]
  expected = _python_sort(_rows(), key.lstrip("-"), descending=key.startswith("-"))
  assert _names(page) == expected
  page.page.close()


def test_unknown_sort_fragment_keeps_the_given_order(chrome, report):
  page = browser.open_page(chrome, report, "#sort=-nonsense")
  assert _names(page) == [row["activation"] for row in _rows()]
  assert page.errors == []
  page.page.close()


def test_reload_choice_is_kept_in_the_fragment(chrome, report):
  """The search rewrites the page; 'reload every 30 s' reloads it, keeping sort and choice."""
  page = browser.open_page(chrome, report, "#sort=-seeds&reload=1")
  assert page.page.is_checked("#reload")
  assert _names(page) == _python_sort(_rows(), "seeds", descending=True)
  page.page.uncheck("#reload")
  assert page.page.evaluate("location.hash") == "#sort=-seeds"
  page.page.check("#reload")
  assert page.page.evaluate("location.hash") == "#sort=-seeds&reload=1"
  page.page.close()


def test_digits_table_page_opens_and_sorts(chrome, tmp_path):
  """All 2,791 functions of the shipped digits table: every row there, sortable. The time
  is bounded loosely here (bench/report_page.py measures it: about 0.5 s)."""
  from bench import report_page
  rows, curves = report_page.digits_rows()
  path = html_page.write(str(tmp_path / "report.html"),
                         html_page.render(title="digits", rows=rows, curves=curves))
  start = time.perf_counter()
  page = browser.open_page(chrome, path, "#sort=-test_accuracy")
  assert time.perf_counter() - start < 10
  names = _names(page)
  assert len(names) == len(rows) == 2791
  assert names == _python_sort(rows, "test_accuracy", descending=True)
  assert page.errors == []
  page.page.close()
