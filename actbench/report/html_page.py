"""report.html: a live, self-contained HTML page of a search, rewritten as it runs.

    from actbench.report import html_page
    rows = report.store_leaderboard(classes, evaluations)
    html_page.write(os.path.join(workdir, "report.html"),
                    html_page.render(title="digits search", rows=rows, curves=curves,
                                     figures={"Search curve": "search_curve.png"}))

One file that needs nothing else: the figures are embedded as data: URIs, the CSS and the
script are inline, and a Content-Security-Policy forbids every fetch but those, so the page
opens from disk (file://) on a machine without network and leaks nothing when it is shared.

The leaderboard travels as JSON in a `<script type="application/json">` and the script builds
the rows from it: a page of thousands of functions is a few hundred kB to parse instead of
megabytes of markup. Its columns sort on a click (a second click reverses), blanks (NaN, never
stopped) last either way, and `#sort=<column>` or `#sort=-<column>` in the URL sorts on load.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

from actbench.expr import host
from actbench.expr.expression import parse

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")

# (key, header, numeric, first direction of a click: 1 ascending, -1 descending), in the order
# of the row arrays in the page's JSON; the best value comes first on the first click.
SORT_COLUMNS = (
    ("rank", "rank", True, 1),
    ("activation", "activation", False, 1),
    ("validation_accuracy", "validation %", True, -1),
    ("test_accuracy", "test %", True, -1),
    ("train_loss", "train loss", True, 1),
    ("diverged", "failed", True, -1),
    ("stopped_at_epoch", "stopped at epoch", True, 1),
    ("seeds", "seeds", True, -1),
    ("runtime_s", "runtime (s)", True, 1),
)

X_RANGE = (-5.0, 5.0)
SHAPE_POINTS = 41  # a 80-pixel sparkline: one point every 2 pixels
LEVELS = 100       # sparkline values travel as integers 0..LEVELS, -1 for a gap
_Y_LIMIT = 20.0    # the y-range of a shape never exceeds +-20, as in plots.function_shapes


def function_samples(names: Sequence[str], xs) -> np.ndarray:
  """Each function's values at `xs`: float64 (len(names), len(xs)), NaN for a name that does
  not parse (a report must not fail on one odd row).

  No cache of its own: `host.evaluate` evaluates every distinct subtree once, and each operator
  once per tree height for all names together, and `parse` caches its trees, so the 2,791
  functions of the digits space take about 0.1 s at 41 points (0.02 s once parsed).
  """
  xs = np.asarray(xs, np.float64).reshape(-1)
  out = np.full((len(names), xs.size), np.nan)
  exprs, rows = [], []
  for row, name in enumerate(names):
    try:
      exprs.append(parse(name))
    except ValueError:
      continue
    rows.append(row)
  if exprs:
    out[rows] = host.evaluate(exprs, xs)
  return out


def _shape_levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sparkline levels (n, points) of int 0..LEVELS (-1 where not finite) and each row's y-range
  (n, 2). Like plots.function_shapes, the range is the 1st to 99th percentile padded by a
  tenth and at most +-20, so one huge value does not flatten the rest; values beyond it are
  clipped to the border."""
  finite = np.isfinite(values)
  masked = np.where(finite, values, np.nan)
  low, high = _row_percentiles(masked, finite.sum(axis=1), (0.01, 0.99))
  pad = 0.1 * np.maximum(high - low, 1e-6)
  low = np.maximum(low - pad, -_Y_LIMIT)
  high = np.minimum(high + pad, _Y_LIMIT)
  span = np.where(high > low, high - low, 1.0)
  with np.errstate(invalid="ignore"):
    scaled = np.clip((masked - low[:, None]) / span[:, None], 0.0, 1.0)
  levels = np.where(finite, np.rint(scaled * LEVELS), -1).astype(np.int64)
  return levels, np.stack([low, high], axis=1)


def _row_percentiles(masked: np.ndarray, counts: np.ndarray, quantiles) -> list[np.ndarray]:
  """np.nanpercentile(masked, axis=1) (linear interpolation) for each quantile, NaN for a row
  without a value, in one sort: nanpercentile goes row by row, 0.4 s for 2,791 rows."""
  ordered = np.sort(masked, axis=1)  # NaN last
  rows = np.arange(len(masked))
  results = []
  for quantile in quantiles:
    position = quantile * np.maximum(counts - 1, 0)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(counts - 1, 0))
    weight = position - below
    with np.errstate(invalid="ignore"):
      value = ordered[rows, below] * (1 - weight) + ordered[rows, above] * weight
    results.append(np.where(counts > 0, value, np.nan))
  return results


def _curve_levels(curves: Sequence[Sequence[float] | None]) -> tuple[list, list[float]]:
  """Learning curves as levels on one shared y-range (so that rows compare at a glance), None
  for a row without a curve, and that range: from the lowest quartile of all values to the
  highest, lower values on the bottom line, so that the good functions' curves, crowded near
  the top, do not all look flat beside the ones that collapsed to chance."""
  arrays = [None if c is None else np.asarray(c, np.float64).reshape(-1) for c in curves]
  finite = [a[np.isfinite(a)] for a in arrays if a is not None]
  values = np.concatenate(finite) if finite else np.zeros(0)
  if not values.size:
    return [None] * len(arrays), [0.0, 1.0]
  low, high = float(np.percentile(values, 25)), float(values.max())
  span = high - low if high > low else 1.0
  levels = []
  for a in arrays:
    if a is None or not np.isfinite(a).any():
      levels.append(None)
      continue
    with np.errstate(invalid="ignore"):
      level = np.rint(np.clip((a - low) / span, 0.0, 1.0) * LEVELS)
    levels.append(np.where(np.isfinite(a), level, -1).astype(np.int64).tolist())
  return levels, [low, high]


def _number(value) -> float | None:
  """A JSON number for sorting: None for NaN and blanks ('' = never stopped)."""
  if value is None or value == "" or isinstance(value, str):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _percent(value) -> str:
  value = _number(value)
  return "-" if value is None else f"{100 * value:.2f}"


def _fixed(value, digits: int) -> str:
  value = _number(value)
  return "-" if value is None else f"{value:.{digits}f}"


def _row_data(row: Mapping) -> tuple[list, list[str]]:
  """A leaderboard row as the page's sort values (SORT_COLUMNS order) and its texts (formatted
  here, not in the browser: Python and JavaScript round halves differently)."""
  stopped = row.get("stopped_at_epoch", "")
  values = [_number(row.get("rank")), str(row.get("activation", "")),
            _number(row.get("validation_accuracy")), _number(row.get("test_accuracy")),
            _number(row.get("train_loss")), 1 if row.get("diverged") else 0,
            _number(stopped), _number(row.get("seeds")), _number(row.get("runtime_s"))]
  texts = [_percent(row.get("validation_accuracy")), _percent(row.get("test_accuracy")),
           _fixed(row.get("train_loss"), 4), _fixed(row.get("runtime_s"), 1)]
  return values, texts


def page_data(rows: Sequence[Mapping], curves: Mapping[str, Sequence[float]] | None = None,
              shapes: bool = True) -> dict:
  """What the page's script reads: the rows, their texts, and the sparklines' levels."""
  values, texts = zip(*[_row_data(row) for row in rows]) if rows else ((), ())
  names = [v[1] for v in values]
  data = {"columns": [{"key": key, "first": first} for key, _, _, first in SORT_COLUMNS],
          "rows": list(values), "texts": list(texts), "x_range": list(X_RANGE)}
  if shapes:
    samples = function_samples(names, np.linspace(*X_RANGE, SHAPE_POINTS))
    levels, ranges = _shape_levels(samples)
    data["shapes"] = levels.tolist()
    data["shape_ranges"] = [[_rounded(low), _rounded(high)] for low, high in ranges.tolist()]
  if curves is not None:
    data["curves"], data["curve_range"] = _curve_levels([curves.get(n) for n in names])
  return data


def _rounded(value: float) -> float | None:
  return float(f"{value:.4g}") if math.isfinite(value) else None


def json_for_script(value) -> str:
  """JSON that is safe inside a <script> element: no '<', '>' or '&' (written as \\u003c...),
  so no string can close the element or open a comment; non-ASCII as \\u escapes."""
  text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
  return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _esc(value) -> str:
  return escape(str(value), quote=True)


def _image_uri(source: str | bytes) -> str | None:
  """A data: URI of a PNG (or JPEG, GIF) file or its bytes; None for a file that is missing."""
  if isinstance(source, (bytes, bytearray)):
    data = bytes(source)
  else:
    try:
      with open(source, "rb") as f:
        data = f.read()
    except OSError:
      return None
  mime = ("image/jpeg" if data[:3] == b"\xff\xd8\xff" else
          "image/gif" if data[:4] == b"GIF8" else "image/png")
  return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figures_html(figures: Mapping[str, str | bytes]) -> str:
  parts = []
  for title, source in figures.items():
    uri = _image_uri(source)
    if uri is not None:
      parts.append(f'<figure><img src="{uri}" alt="{_esc(title)}">'
                   f"<figcaption>{_esc(title)}</figcaption></figure>")
  return f'<section id="figures"><h2>Figures</h2>{"".join(parts)}</section>' if parts else ""


def _baselines_html(baselines: Sequence[Mapping]) -> str:
  body = "".join(
      f"<tr><td class=num>{_esc(row.get('rank', ''))}</td><td>{_esc(row.get('activation', ''))}"
      f"</td><td class=num>{_percent(row.get('validation_accuracy'))}</td>"
      f"<td class=num>{_percent(row.get('test_accuracy'))}</td></tr>" for row in baselines)
  return ('<section id="baselines"><h2>Baselines</h2><table class="plain"><thead><tr>'
          "<th>rank</th><th>activation</th><th>validation %</th><th>test %</th></tr></thead>"
          f"<tbody>{body}</tbody></table></section>")


def _pairs_html(section: str, heading: str, pairs: Mapping[str, str]) -> str:
  body = "".join(f"<tr><th>{_esc(key)}</th><td>{_esc(value)}</td></tr>"
                 for key, value in pairs.items())
  return (f'<section id="{section}"><h2>{heading}</h2><table class="pairs">{body}</table>'
          "</section>")


def _summary(rows: Sequence[Mapping]) -> str:
  failed = sum(1 for row in rows if row.get("diverged"))
  stopped = sum(1 for row in rows if row.get("stopped_at_epoch", "") not in ("", None))
  return (f"{len(rows)} functions evaluated: <span class=failed-key>{failed} failed</span>, "
          f"<span class=stopped-key>{stopped} stopped early</span>")


# Column widths of the leaderboard. Its rows are laid out as grids of fixed columns, not as a
# table, so that Chromium can skip the rows off screen (content-visibility): 2,791 rows paint in
# 0.5 s instead of 1.6 s, most of which went to the table layout.
_WIDTHS = {"rank": "4.5em", "activation": "minmax(14em,30em)", "validation_accuracy": "6.5em",
           "test_accuracy": "5.5em", "train_loss": "6em", "diverged": "4em",
           "stopped_at_epoch": "5.5em", "seeds": "4em", "runtime_s": "6em", "plot": "88px"}


def _header(shapes: bool, curves: bool) -> tuple[list[str], list[str]]:
  """The leaderboard's header cells and column widths: the sortable columns, with the shape
  after the name and the validation curve after the accuracies."""
  cells = [(f'<th data-key="{key}" class="{"num" if numeric else "text"}">'
            f'<button type="button">{_esc(label)}</button></th>', _WIDTHS[key])
           for key, label, numeric, _ in SORT_COLUMNS]
  if curves:
    cells.insert(4, ('<th class="plot" title="validation accuracy per epoch, one scale for all '
                     'rows">validation curve</th>', _WIDTHS["plot"]))
  if shapes:
    cells.insert(2, (f'<th class="plot" title="each function on [{X_RANGE[0]:g}, '
                     f'{X_RANGE[1]:g}], on its own y-scale">shape</th>', _WIDTHS["plot"]))
  return [cell for cell, _ in cells], [width for _, width in cells]


def _leaderboard_html(rows: Sequence[Mapping], shapes: bool, curves: bool) -> str:
  """The leaderboard's frame: its header; the script fills in the rows."""
  headers, widths = _header(shapes, curves)
  return ('<section id="leaderboard"><h2>Leaderboard</h2>'
          f'<p class="summary">{_summary(rows)}; click a column to sort.</p>'
          f'<table id="board" style="--columns:{" ".join(widths)}"><thead><tr>'
          f'{"".join(headers)}</tr></thead><tbody></tbody></table></section>')


def render(*, title: str, rows: list[dict], curves: Mapping[str, Sequence[float]] | None = None,
           figures: Mapping[str, str | bytes] | None = None, baselines: list[dict] | None = None,
           recipe: Mapping[str, str] | None = None, provenance: Mapping[str, str] | None = None,
           updated: float | None = None, shapes: bool = True) -> str:
  """The page: title, update time, provenance, the sortable leaderboard (`rows` ranked, as
  `leaderboard.store_leaderboard` returns them, with each function's shape on [-5, 5] unless
  `shapes` is False, and its validation curve from `curves` where given), the figures (title
  -> PNG path or bytes; missing files left out), the baselines and the recipe."""
  updated = time.time() if updated is None else updated
  stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(updated))
  data = page_data(rows, curves, shapes)
  data["updated"] = updated
  sections = [
      _pairs_html("provenance", "Provenance", provenance) if provenance else "",
      _leaderboard_html(rows, shapes, curves is not None),
      _figures_html(figures) if figures else "",
      _baselines_html(baselines) if baselines else "",
      _pairs_html("recipe", "Recipe", recipe) if recipe else "",
  ]
  return _TEMPLATE.format(csp=_esc(CSP), title=_esc(title), stamp=_esc(stamp), style=_STYLE,
                          sections="\n".join(s for s in sections if s),
                          data=json_for_script(data), script=_SCRIPT)


def write(path: str, html: str) -> str:
  """Writes the page atomically: a temporary file beside it, flushed to disk, then renamed
  over it, so a browser or another process reading it sees the old page or the new one, never
  half of one. Keeps the old file's permissions (0644 for a new one). Returns `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  try:
    mode = os.stat(path).st_mode & 0o777
  except FileNotFoundError:
    mode = 0o644
  prefix = "." + os.path.basename(path) + "."
  _remove_stale(directory, prefix)
  fd, temporary = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(html.encode("utf-8"))
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)
  except BaseException:
    try:
      os.unlink(temporary)
    except OSError:
      pass
    raise
  _fsync_directory(directory)
  return path


STALE_S = 600.0  # a temporary page this old was left by a writer killed mid-write


def _remove_stale(directory: str, prefix: str) -> None:
  """Removes the temporary pages of writers killed mid-write (kill -9 skips the cleanup), old
  enough that no live writer (each takes milliseconds) still owns them."""
  now = time.time()
  for entry in os.scandir(directory):
    if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
      try:
        if now - entry.stat().st_mtime > STALE_S:
          os.unlink(entry.path)
      except OSError:
        pass


def _fsync_directory(directory: str):
  """Makes the rename itself durable; not every platform or file system lets a directory be
  opened for it, and the page is rewritten soon anyway."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1>
<p class="updated">updated <time id="updated">{stamp}</time> <span id="age"></span>
<label><input type="checkbox" id="reload"> reload every 30 s</label></p></header>
{sections}
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .4em}
.updated,.summary{color:#555;margin:.2em 0}.updated label{margin-left:1em}
table{border-collapse:collapse}
th,td{padding:1px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
#board,#board thead,#board tbody{display:block}
#board tr{display:grid;grid-template-columns:var(--columns);align-items:center;
  border-bottom:1px solid #eee}
#board th,#board td{border:0;overflow:hidden}#board td{text-overflow:ellipsis}
#board th{white-space:normal;line-height:1.15;align-self:end;padding-bottom:3px}
#board tbody tr{content-visibility:auto;contain-intrinsic-size:auto 23px}
#board thead{position:sticky;top:0;background:#f4f4f4;z-index:1}
#board th button{font:inherit;font-weight:bold;border:0;background:none;cursor:pointer;padding:0}
#board th[aria-sort=ascending] button::after{content:" \\25B2"}
#board th[aria-sort=descending] button::after{content:" \\25BC"}
#board td.name{font-family:ui-monospace,monospace}
#board td.plot{padding:0 4px}
svg{display:block;width:80px;height:22px}
svg path{fill:none;stroke:#1f77b4;stroke-width:1.3;stroke-linecap:round;
  vector-effect:non-scaling-stroke}
svg path.axis{stroke:#ccc;stroke-width:.7}
tr.failed{background:#fde2e2}tr.failed td.name{color:#a00}
tr.stopped{background:#fff3d6}
.failed-key{background:#fde2e2;padding:0 4px}.stopped-key{background:#fff3d6;padding:0 4px}
.badge{font:11px system-ui,sans-serif;border-radius:3px;padding:0 4px;margin-left:6px}
tr.failed .badge{background:#a00;color:#fff}tr.stopped .badge{background:#b77a00;color:#fff}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figure img{max-width:min(640px,90vw);border:1px solid #eee}
figcaption{color:#555;text-align:center}
table.pairs th{font-weight:normal;color:#555}table.pairs td{font-family:ui-monospace,monospace;
  white-space:pre-wrap}
"""

# The rows are built once as markup strings, parsed in one go, then only moved when sorting.
_SCRIPT = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const cols = data.columns, rows = data.rows, texts = data.texts;
  const shapes = data.shapes, ranges = data.shape_ranges, curves = data.curves;
  const tbody = document.querySelector("#board tbody");
  const heads = Array.from(document.querySelectorAll("#board th[data-key]"));
  const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  const L = 100;

  // A sparkline path over integer levels 0..L, -1 leaving a gap; x is the index. A point
  // between gaps (a curve of one epoch) is a segment of length 0: a dot, by its round cap.
  function path(levels) {
    let d = "";
    for (let i = 0; i < levels.length; i++) {
      const v = levels[i];
      if (v < 0) continue;
      const alone = !(levels[i - 1] >= 0) && !(levels[i + 1] >= 0);
      d += (levels[i - 1] >= 0 ? "L" : "M") + i + " " + (L - v) + (alone ? "h0" : "");
    }
    return d;
  }
  function svg(levels, extra, title) {
    const w = Math.max(levels.length - 1, 1), d = path(levels);
    // A margin of 6% above and below, so that a line along the top or bottom is whole.
    return '<svg viewBox="0 -6 ' + w + " " + (L + 12) + '" preserveAspectRatio="none"><title>' +
        esc(title) + "</title>" + extra + '<path d="' + d + '"/></svg>';
  }
  function shapeCell(i) {
    const r = ranges[i], n = shapes[i].length;
    if (r[0] === null) return '<td class="plot" title="not finite on this range"></td>';
    let axes = '<path class="axis" d="M' + (n - 1) / 2 + " 0V" + L + '"/>';
    if (r[0] < 0 && r[1] > 0) {
      const y = L - L * (0 - r[0]) / (r[1] - r[0]);
      axes += '<path class="axis" d="M0 ' + y.toFixed(1) + "H" + (n - 1) + '"/>';
    }
    const x = data.x_range;
    return '<td class="plot">' + svg(shapes[i], axes, "x from " + x[0] + " to " + x[1] +
        ", y from " + r[0] + " to " + r[1]) + "</td>";
  }
  function curveCell(i) {
    const c = curves[i];
    if (!c) return '<td class="plot"></td>';
    const r = data.curve_range, pct = (v) => (100 * v).toFixed(1);
    return '<td class="plot">' + svg(c, "", c.length + " epochs, scale " + pct(r[0]) +
        "% to " + pct(r[1]) + "%") + "</td>";
  }
  function rowHtml(i) {
    const v = rows[i], t = texts[i], stopped = v[6] !== null;
    const cls = v[5] ? ' class="failed"' : stopped ? ' class="stopped"' : "";
    const badge = v[5] ? '<span class="badge">failed</span>' :
        stopped ? '<span class="badge">stopped at epoch ' + v[6] + "</span>" : "";
    let h = "<tr" + cls + '><td class="num">' + (v[0] === null ? "" : v[0]) +
        '</td><td class="name" title="' + esc(v[1]) + '"><span class="fn">' + esc(v[1]) +
        "</span>" + badge + "</td>";
    if (shapes) h += shapeCell(i);
    h += '<td class="num">' + t[0] + '</td><td class="num">' + t[1] + "</td>";
    if (curves) h += curveCell(i);
    h += '<td class="num">' + t[2] + "</td><td>" + (v[5] ? "yes" : "") + '</td><td class="num">' +
        (stopped ? v[6] : "") + '</td><td class="num">' + (v[7] === null ? "" : v[7]) +
        '</td><td class="num">' + t[3] + "</td></tr>";
    return h;
  }

  const parts = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) parts[i] = rowHtml(i);
  tbody.innerHTML = parts.join("");
  const trs = Array.from(tbody.rows);

  // Blanks (null) after every value in both directions; ties keep the given order.
  function sortBy(key, dir) {
    const c = cols.findIndex((col) => col.key === key);
    if (c < 0) return false;
    const order = rows.map((_, i) => i);
    order.sort((a, b) => {
      const x = rows[a][c], y = rows[b][c];
      if (x === null || y === null) return x === y ? a - b : x === null ? 1 : -1;
      return x < y ? -dir : x > y ? dir : a - b;
    });
    const fragment = document.createDocumentFragment();
    for (const i of order) fragment.appendChild(trs[i]);
    tbody.appendChild(fragment);
    for (const th of heads) {
      if (th.dataset.key === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" :
          "descending");
      else th.removeAttribute("aria-sort");
    }
    state.sort = (dir > 0 ? "" : "-") + key;
    return true;
  }

  const state = {sort: null, reload: false};
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const sort = params.get("sort");
    if (sort && sort !== state.sort) {
      const dir = sort[0] === "-" ? -1 : 1;
      sortBy(dir < 0 ? sort.slice(1) : sort, dir);
    }
    state.reload = params.get("reload") === "1";
    document.getElementById("reload").checked = state.reload;
  }
  function writeHash() {
    const params = new URLSearchParams();
    if (state.sort) params.set("sort", state.sort);
    if (state.reload) params.set("reload", "1");
    const hash = params.toString();
    try {
      history.replaceState(null, "", hash ? "#" + hash : location.pathname);
    } catch (e) { /* a browser that refuses it on file:// keeps the sort anyway */ }
  }
  for (const th of heads) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.key, col = cols.find((c) => c.key === key);
      const now = th.getAttribute("aria-sort");
      const dir = now === "ascending" ? -1 : now === "descending" ? 1 : col.first;
      sortBy(key, dir);
      writeHash();
    });
  }
  document.getElementById("reload").addEventListener("change", (event) => {
    state.reload = event.target.checked;
    writeHash();
  });
  // The search rewrites the file; a reload shows the new one, the sort kept in the URL.
  setInterval(() => { if (state.reload) location.reload(); }, 30000);
  function showAge() {
    const minutes = Math.round((Date.now() / 1000 - data.updated) / 60);
    document.getElementById("age").textContent = minutes >= 1 ? "(" + minutes + " min ago)" : "";
  }
  showAge();
  setInterval(showAge, 60000);
  window.addEventListener("hashchange", readHash);
  readHash();
  document.body.dataset.ready = String(performance.now());
})();
"""
