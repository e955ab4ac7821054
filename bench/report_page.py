"""Size and speed of report.html (actbench.report.html_page) for the shipped digits table.

    python -m bench.report_page                # 2,791 functions, 3 loads in headless Chromium
    python -m bench.report_page --loads 5 --keep /tmp/report.html

Builds the page for every function of the digits benchmark table, ranked as
`report.store_leaderboard` ranks a store, with each function's shape and validation curve,
and prints the time to build it in Python (rendering, then writing), its size, and, median of
`--loads` fresh pages in headless Chromium (/usr/bin/chromium, driven by Playwright): the time
from navigation to the end of the page's script (rows built) and to the first frame painted
with them, and the wall time of `page.goto(..., wait_until="load")`. Target of issue 26: under
2 s to open on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import types

import numpy as np

# Set by an init script (Playwright's, outside the page's CSP): the first frame after the
# document is parsed, that is after the page's own script has built the rows.
_PAINTED = """
document.addEventListener("DOMContentLoaded", () => {
  requestAnimationFrame(() => setTimeout(() => { window.__painted = performance.now(); }));
});
"""


def digits_rows() -> tuple[list[dict], dict[str, list[float]]]:
  """The digits table as a store's leaderboard (`report.store_leaderboard` over one evaluation
  per function, a diverged one failed) and the validation curves."""
  from actbench import report, tables
  table = tables.load("digits")
  validation, test = table.accuracy("validation"), table.accuracy("test")
  loss, runtime = table.metrics["Train Loss"], table.metrics["Runtime (s)"]
  diverged = table.metrics["Diverged"]
  evaluations = {
      i: types.SimpleNamespace(
          metrics={"validation_accuracy": float(validation[i]), "test_accuracy": float(test[i]),
                   "train_loss": float(loss[i])},
          status="failed" if diverged[i] > 0 or not np.isfinite(validation[i]) else "done",
          per_seed=[0], runtime_s=float(runtime[i]))
      for i in range(len(table))}
  curve = table.curve("validation")
  curves = {name: curve[i].tolist() for i, name in enumerate(table.names)
            if np.isfinite(curve[i]).any()}
  return report.store_leaderboard(table.classes(), evaluations), curves


def build(path: str) -> dict:
  from actbench.report import html_page
  rows, curves = digits_rows()
  start = time.perf_counter()
  page = html_page.render(title="digits: binary(unary(x),unary(x))", rows=rows, curves=curves,
                          provenance={"table": "actbench/tables/act-bench-digits.json.gz"},
                          recipe={"search.space": "binary(unary(x),unary(x))"})
  rendered = time.perf_counter()
  html_page.write(path, page)
  written = time.perf_counter()
  return {"rows": len(rows), "render_s": rendered - start, "write_s": written - rendered,
          "bytes": os.path.getsize(path)}


def load_times(path: str, loads: int, executable: str) -> dict:
  from playwright.sync_api import sync_playwright
  url = "file://" + os.path.abspath(path)
  script, painted, goto = [], [], []
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox"])
    for _ in range(loads):
      page = browser.new_page()
      page.add_init_script(_PAINTED)
      start = time.perf_counter()
      page.goto(url, wait_until="load")
      goto.append(time.perf_counter() - start)
      while page.evaluate("window.__painted") is None:  # wait_for_function evals: CSP says no
        time.sleep(0.01)
      script.append(float(page.evaluate("Number(document.body.dataset.ready)")) / 1000)
      painted.append(page.evaluate("window.__painted") / 1000)
      shown = page.locator("#board tbody tr").count()
      page.close()
    browser.close()
  return {"rows_shown": shown, "script_s": statistics.median(script),
          "painted_s": statistics.median(painted), "goto_s": statistics.median(goto),
          "painted_all_s": painted}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--loads", type=int, default=3)
  parser.add_argument("--keep", help="write the page here (default: a temporary directory)")
  parser.add_argument("--chromium", default="/usr/bin/chromium")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    path = args.keep or os.path.join(directory, "report.html")
    built = build(path)
    print(f"{built['rows']} rows: rendered in {built['render_s']:.3f} s, written in "
          f"{built['write_s']:.3f} s, {built['bytes']:,} bytes")
    loaded = load_times(path, args.loads, args.chromium)
    print(f"headless Chromium, median of {args.loads} loads: rows built "
          f"{loaded['script_s']:.3f} s, first frame with them {loaded['painted_s']:.3f} s "
          f"(each: {', '.join(f'{s:.3f}' for s in loaded['painted_all_s'])}), "
          f"goto until load {loaded['goto_s']:.3f} s; {loaded['rows_shown']} rows shown")


if __name__ == "__main__":
  main()
