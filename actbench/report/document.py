"""A benchmark's report as a Markdown document with PNG figures (mode report, with
config.report.document): what the table holds, the best functions against the baselines, the
surrogate's predictive quality and the replayed searches, with the targets checked.

    from actbench import tables
    from actbench.report import document
    document.write(tables.load("table.json"), replay_json, "docs/digits-bench.md", ...)
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

from actbench.expr import operators
from actbench.report import plots

BASELINES = tuple(f"{name}(x)" for name in operators.BASELINES)


def _percent(value) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _count(value) -> str:
  """An evaluation count from replay.json (None: not reached within the budget)."""
  if value is None or not math.isfinite(value):
    return "not reached"
  return f"{value:g}"


def _ratio(numerator, denominator) -> float:
  if numerator is None or denominator is None or not denominator:
    return math.nan
  return numerator / denominator


def accuracy_section(table, figures: str, relative: str) -> list[str]:
  accuracy = table.accuracy("validation")
  finite = accuracy[np.isfinite(accuracy)]
  plots.accuracy_histogram(accuracy, os.path.join(figures, "accuracy_histogram.png"),
                           marks={name: accuracy[table.index(name)] for name in
                                  ("relu(x)", "swish(x)", "tanh(x)") if _has(table, name)})
  quantiles = np.percentile(finite, [0, 10, 25, 50, 75, 90, 99, 100]) if finite.size else []
  lines = ["## The table", "",
           f"{len(table)} functions (equivalence classes); {len(table) - finite.size} failed "
           "to train (non-finite loss: no accuracy).", "",
           "| validation accuracy | min | 10% | 25% | median | 75% | 90% | 99% | max |",
           "|---|---|---|---|---|---|---|---|---|",
           "| % | " + " | ".join(_percent(q) for q in quantiles) + " |", "",
           f"![accuracy distribution]({relative}/accuracy_histogram.png)", ""]
  return lines


def _has(table, name) -> bool:
  try:
    table.index(name)
  except KeyError:
    return False
  return True


def best_section(table, figures: str, relative: str, count: int = 10) -> list[str]:
  validation, test = table.accuracy("validation"), table.accuracy("test")
  order = np.argsort(np.where(np.isfinite(validation), -validation, np.inf), kind="stable")
  rank = {int(index): position + 1 for position, index in enumerate(order)}
  lines = ["## The best functions against the baselines", "",
           "| rank | function | validation % | test % |", "|---|---|---|---|"]
  for index in order[:count]:
    lines.append(f"| {rank[int(index)]} | `{table.names[index]}` | "
                 f"{_percent(validation[index])} | {_percent(test[index])} |")
  lines += ["", "| baseline | rank | validation % | test % |", "|---|---|---|---|"]
  for name in BASELINES:
    if _has(table, name):
      index = table.index(name)
      lines.append(f"| `{name}` | {rank[index]} | {_percent(validation[index])} | "
                   f"{_percent(test[index])} |")
  best = [table.names[i] for i in order[:8] if math.isfinite(validation[i])]
  plots.function_shapes(best, os.path.join(figures, "best_functions.png"),
                        references=("relu(x)",),
                        scores={table.names[i]: validation[i] for i in order[:8]},
                        title="The 8 best functions (validation accuracy) beside relu")
  lines += ["", f"![best functions]({relative}/best_functions.png)", ""]
  return lines


def quality_section(quality: Mapping, figures: str, relative: str) -> list[str]:
  if not quality:
    return []
  plots.quality_curves(quality, os.path.join(figures, "surrogate_quality.png"))
  sizes = list(next(iter(quality.values()))["train_sizes"])
  lines = ["## Surrogate quality", "",
           "Median rank correlation (Spearman, with Kendall in brackets) between the k-NN "
           "prediction and the true validation accuracy of the functions not fitted on, against "
           "the number of functions the surrogate is fitted on (White et al. 2021).", "",
           "| features | " + " | ".join(str(s) for s in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
  for name, values in quality.items():
    cells = [f"{s:.3f} ({k:.3f})" if s is not None and k is not None else "-"
             for s, k in zip(values["spearman_median"], values["kendall_median"])]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", f"![surrogate quality]({relative}/surrogate_quality.png)", ""]
  return lines


def replay_section(saved: Mapping, figures: str, relative: str) -> list[str]:
  curves = {name: np.asarray([[math.nan if v is None else v for v in row]
                              for row in run["best_so_far"]], np.float64)
            for name, run in saved["strategies"].items()}
  plots.search_curves(curves, os.path.join(figures, "search_curves.png"),
                      reference=saved["best_accuracy"],
                      title="Replayed searches: best validation accuracy so far")
  summary = saved["summary"]
  lines = ["## Replayed searches", "",
           f"{len(saved['seeds'])} seeds per strategy, up to {saved['budget']} evaluations "
           f"each (a replay ends once it finds the table's best function). Top 1%: validation "
           f"accuracy of at least {_percent(saved['top1_threshold'])}%.", "",
           "| strategy | evaluations to the best (median, quartiles, seeds reaching) | "
           "evaluations to a top-1% function |", "|---|---|---|"]
  for name, values in summary.items():
    cells = []
    for key in ("evaluations_to_best", "evaluations_to_top1"):
      stats = values[key]
      cells.append(f"{_count(stats['median'])} ({_count(stats['q25'])}-{_count(stats['q75'])}), "
                   f"{100 * stats['reached']:.0f}%")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", f"![search curves]({relative}/search_curves.png)", ""]
  return lines


def targets_section(saved: Mapping | None, quality: Mapping) -> list[str]:
  """Issue 6's targets, measured: aquasurf against random search, and surrogate quality."""
  lines = ["## Targets", ""]
  if saved is not None and {"aquasurf", "random"} <= set(saved["summary"]):
    summary = saved["summary"]
    for key, limit, label in (("evaluations_to_best", 1 / 5, "the best function"),
                              ("evaluations_to_top1", 1 / 3, "a top-1% function")):
      ratio = _ratio(summary["aquasurf"][key]["median"], summary["random"][key]["median"])
      verdict = "met" if ratio <= limit else "missed"
      lines.append(f"- Median evaluations to {label}: aquasurf "
                   f"{_count(summary['aquasurf'][key]['median'])}, random "
                   f"{_count(summary['random'][key]['median'])}: ratio {ratio:.3f} "
                   f"(target at most {limit:.3f}): {verdict}.")
  if "union" in quality:
    sizes = list(quality["union"]["train_sizes"])
    if 100 in sizes:
      at = sizes.index(100)
      union = quality["union"]["spearman_median"][at]
      others = {name: values["spearman_median"][at] for name, values in quality.items()
                if name != "union"}
      above = all(union > value for value in others.values() if value is not None)
      verdict = "met" if union is not None and union >= 0.7 and above else "missed"
      lines.append(f"- Spearman correlation of the union surrogate fitted on 100 functions: "
                   f"{union:.3f} (target at least 0.7 and above each ablation: "
                   + ", ".join(f"{k} {v:.3f}" for k, v in others.items()) + f"): {verdict}.")
  return lines + [""]


def write(table, replay_saved: Mapping | None, path: str, *, title: str,
          introduction: Sequence[str] = (), discussion: Sequence[str] = ()) -> str:
  """Writes the document at `path` and its figures in a folder beside it named after it
  (docs/digits-bench.md -> docs/digits-bench/); returns the path."""
  stem = os.path.splitext(os.path.basename(path))[0]
  figures = os.path.join(os.path.dirname(os.path.abspath(path)), stem)
  os.makedirs(figures, exist_ok=True)
  quality = (replay_saved or {}).get("quality", {})
  lines = [f"# {title}", "", *introduction, ""]
  lines += accuracy_section(table, figures, stem)
  lines += best_section(table, figures, stem)
  lines += quality_section(quality, figures, stem)
  if replay_saved is not None:
    lines += replay_section(replay_saved["replay"], figures, stem)
  lines += targets_section(None if replay_saved is None else replay_saved["replay"], quality)
  lines += [paragraph for paragraph in discussion if paragraph] + [""]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  os.replace(path + ".tmp", path)
  return path
