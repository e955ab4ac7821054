"""PNG figures of searches and benchmarks: the surrogate's map, function shapes, search curves.

Matplotlib with the non-interactive Agg backend, so plots work on headless hosts and in tests;
every function writes one file atomically and returns its path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from actbench.expr import host
from actbench.expr.expression import parse


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _save(figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = path + ".tmp.png"
  figure.savefig(temporary, dpi=120, bbox_inches="tight")
  os.replace(temporary, path)
  _pyplot().close(figure)
  return path


def surrogate_map(embedding: np.ndarray, accuracies: np.ndarray, evaluated: Sequence[int],
                  path: str, *, names: Sequence[str] | None = None, label_best: int = 3,
                  title: str = "") -> str:
  """The 2-D embedding, points coloured by validation accuracy where it is known (grey where
  not, or where the function failed), evaluated functions circled, the best ones labelled.

  embedding: (n, 2), NaN rows (no features) are left out; accuracies: (n,) with NaN unknown.
  """
  plt = _pyplot()
  embedding = np.asarray(embedding, np.float64)
  accuracies = np.asarray(accuracies, np.float64)
  shown = np.isfinite(embedding).all(axis=1)
  known = shown & np.isfinite(accuracies)
  figure, axes = plt.subplots(figsize=(7, 6))
  axes.scatter(*embedding[shown & ~known].T, s=4, c="0.8", label="accuracy unknown or failed")
  if known.any():
    points = axes.scatter(*embedding[known].T, s=6, c=accuracies[known], cmap="viridis")
    figure.colorbar(points, ax=axes, label="validation accuracy")
  marked = np.zeros(len(embedding), bool)
  marked[np.asarray(list(evaluated), np.int64)] = True
  marked &= shown
  if marked.any():
    axes.scatter(*embedding[marked].T, s=40, facecolors="none", edgecolors="red",
                 linewidths=0.8, label=f"evaluated ({int(marked.sum())})")
  if names is not None and known.any():
    order = np.flatnonzero(known)[np.argsort(-accuracies[known], kind="stable")]
    for index in order[:label_best]:
      axes.annotate(names[index], embedding[index], fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
  axes.set_xticks([])
  axes.set_yticks([])
  axes.set_title(title or "Surrogate embedding of the search space")
  axes.legend(loc="best", fontsize=8)
  return _save(figure, path)


def function_shapes(names: Sequence[str], path: str, *,
                    references: Sequence[str] = ("relu(x)",),
                    scores: Mapping[str, float] | None = None, x_range=(-5.0, 5.0),
                    title: str = "") -> str:
  """Each function on x_range (float64 on the host) beside the references (dashed), one panel
  per function, its score in the panel title. Values outside a sane range are clipped from
  view, not from the data."""
  plt = _pyplot()
  names = list(names)
  x = np.linspace(*x_range, 401)
  columns = min(len(names), 4) or 1
  rows = -(-len(names) // columns) or 1
  figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
  reference_values = host.evaluate([parse(r) for r in references], x) if references else []
  values = host.evaluate([parse(n) for n in names], x) if names else []
  for index, ax in enumerate(axes.ravel()):
    if index >= len(names):
      ax.axis("off")
      continue
    for reference, y in zip(references, reference_values):
      ax.plot(x, y, "--", color="0.5", linewidth=1, label=reference)
    ax.plot(x, values[index], color="C0", linewidth=1.5)
    finite = np.concatenate([v[np.isfinite(v)] for v in [values[index], *reference_values]])
    if finite.size:
      low, high = np.percentile(finite, [1, 99])
      pad = 0.1 * max(high - low, 1e-6)
      ax.set_ylim(max(low - pad, -20), min(high + pad, 20))
    score = scores.get(names[index]) if scores else None
    label = names[index] if len(names[index]) <= 40 else names[index][:37] + "..."
    ax.set_title(label + (f"\n{100 * score:.2f}%" if score is not None else ""), fontsize=8)
    ax.axhline(0, color="0.85", linewidth=0.5)
    ax.axvline(0, color="0.85", linewidth=0.5)
    ax.tick_params(labelsize=7)
  if references:
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
  figure.suptitle(title or "Best functions", fontsize=10)
  figure.tight_layout()
  return _save(figure, path)


def search_curves(curves: Mapping[str, np.ndarray], path: str, *, title: str = "",
                  reference: float | None = None) -> str:
  """Best validation accuracy so far against evaluations: per strategy the median over seeds
  and the band between the quartiles. curves: name -> (seeds, evaluations) array (a single
  search is one seed); NaN (nothing finite yet) is left out."""
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for index, (name, values) in enumerate(curves.items()):
    values = np.atleast_2d(np.asarray(values, np.float64))
    steps = np.arange(1, values.shape[1] + 1)
    with warnings.catch_warnings():  # all-NaN columns (nothing finite yet) are expected
      warnings.simplefilter("ignore", RuntimeWarning)
      low, median, high = np.nanpercentile(values, [25, 50, 75], axis=0)
    axes.plot(steps, median, color=f"C{index}", label=name)
    if values.shape[0] > 1:
      axes.fill_between(steps, low, high, color=f"C{index}", alpha=0.2)
  if reference is not None:
    axes.axhline(reference, color="0.4", linestyle=":", linewidth=1, label="best in table")
  longest = max((np.atleast_2d(v).shape[1] for v in curves.values()), default=0)
  if longest > 100:  # long replays: the first evaluations matter most
    axes.set_xscale("log")
    finals = [np.nanmedian(np.atleast_2d(np.asarray(v, np.float64))[:, -1]) for v in
              curves.values()]
    starts = [np.nanmedian(np.atleast_2d(np.asarray(v, np.float64))[:, min(9, longest - 1)])
              for v in curves.values()]
    low, high = np.nanmin(starts), np.nanmax(finals + ([reference] if reference else []))
    if np.isfinite(low) and np.isfinite(high) and high > low:
      axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
  _label(axes, "functions evaluated", "best validation accuracy so far",
         title or "Search curves (median, quartiles)", legend_size=8)
  return _save(figure, path)


def cost_curves(curves: Mapping[str, np.ndarray], epochs: Sequence[float], path: str, *,
                title: str = "", reference: float | None = None) -> str:
  """Best validation accuracy so far against training epochs spent (successive halving's
  currency, where search_curves counts evaluations): per variant the median over seeds and
  the band between the quartiles (for the variants with halving). curves: name -> (seeds,
  len(epochs)) array
  (cost_replay.CostRun.best_so_far); -inf or NaN (nothing finite yet) is left out."""
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5))
  epochs = np.asarray(epochs, np.float64)
  medians = []
  # A colour per strategy and a line per variant (cost_replay's names: "random",
  # "random@27", "random+halving"), so a dozen variants stay apart.
  strategies = list(dict.fromkeys(name.split("@")[0].split("+")[0] for name in curves))
  for name, values in curves.items():
    color = f"C{strategies.index(name.split('@')[0].split('+')[0]) % 10}"
    style = ({"linestyle": "-", "linewidth": 2.0} if "+" in name else
             {"linestyle": "--", "linewidth": 1.2} if "@" in name else
             {"linestyle": ":", "linewidth": 1.5})
    values = np.atleast_2d(np.asarray(values, np.float64))
    values = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():  # all-NaN columns (nothing finite yet) are expected
      warnings.simplefilter("ignore", RuntimeWarning)
      low, median, high = np.nanpercentile(values, [25, 50, 75], axis=0)
    medians.append(median)
    axes.plot(epochs, median, color=color, label=name, drawstyle="steps-post", **style)
    if values.shape[0] > 1 and "+" in name:  # the quartiles of the halving variants only
      axes.fill_between(epochs, low, high, color=color, alpha=0.15, step="post")
  if reference is not None:
    axes.axhline(reference, color="0.4", linestyle=":", linewidth=1, label="best in table")
  if len(epochs) > 1 and epochs[0] > 0 and epochs[-1] / epochs[0] > 100:
    axes.set_xscale("log")  # long budgets: the first epochs matter most
  if medians and len(epochs) > 10:  # leave out the first tenth's climb, as search_curves does
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      low = np.nanmin([m[len(epochs) // 10] for m in medians])
      high = np.nanmax([m[-1] for m in medians] + ([reference] if reference else []))
    if np.isfinite(low) and np.isfinite(high) and high > low:
      axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
  _label(axes, "training epochs spent", "best validation accuracy so far",
         title or "Search curves by cost (median, quartiles)", legend_size=8)
  return _save(figure, path)


def _label(axes, xlabel: str, ylabel: str, title: str, legend_size: int):
  axes.set_xlabel(xlabel)
  axes.set_ylabel(ylabel)
  axes.set_title(title)
  axes.legend(fontsize=legend_size)
  axes.grid(alpha=0.3)


def quality_curves(quality: Mapping[str, Mapping], path: str, *, title: str = "") -> str:
  """The surrogate's predictive quality against the number of training functions: median
  Spearman (solid) and Kendall (dashed) rank correlation per feature set
  (surrogate.quality results by feature-set name)."""
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for index, (name, values) in enumerate(quality.items()):
    sizes = np.asarray(values["train_sizes"])
    axes.plot(sizes, values["spearman_median"], "-o", color=f"C{index}", markersize=3,
              label=f"{name} (Spearman)")
    axes.plot(sizes, values["kendall_median"], "--", color=f"C{index}", alpha=0.7,
              label=f"{name} (Kendall)")
  axes.set_xscale("log")
  _label(axes, "functions the surrogate is fitted on", "rank correlation with true accuracy",
         title or "Surrogate quality (median over seeds)", legend_size=7)
  return _save(figure, path)


def accuracy_histogram(accuracies: np.ndarray, path: str, *,
                       marks: Mapping[str, float] | None = None, title: str = "") -> str:
  """The distribution of a table's validation accuracies (failed functions counted in the
  title), with vertical lines at the marked functions (e.g. relu)."""
  plt = _pyplot()
  accuracies = np.asarray(accuracies, np.float64)
  finite = accuracies[np.isfinite(accuracies)]
  figure, axes = plt.subplots(figsize=(7, 4))
  axes.hist(finite, bins=50, color="C0")
  for index, (name, value) in enumerate((marks or {}).items()):
    if np.isfinite(value):
      axes.axvline(value, color=f"C{index + 1}", linestyle="--", linewidth=1,
                   label=f"{name} {100 * value:.1f}%")
  axes.set_xlabel("validation accuracy")
  axes.set_ylabel("functions")
  axes.set_yscale("log")
  failed = accuracies.size - finite.size
  axes.set_title(title or f"{finite.size} functions trained, {failed} failed")
  if marks:
    axes.legend(fontsize=8, loc="upper left")
  return _save(figure, path)
