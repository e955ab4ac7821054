"""A benchmark's report as a Markdown document with PNG figures (mode report, with
config.report.document): what the table holds, the best functions against the baselines, the
surrogate's predictive quality and the replayed searches (by evaluations and, for a table with
learning curves, by training epochs with and without successive halving), with the targets
checked.

    from actbench import tables
    from actbench.report import document
    document.write(tables.load("table.json"), replay_json, "docs/digits-bench.md", ...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

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


def _quantile_row(label: str, table) -> tuple[str, int]:
  accuracy = table.accuracy("validation")
  finite = accuracy[np.isfinite(accuracy)]
  quantiles = np.percentile(finite, [0, 10, 25, 50, 75, 90, 99, 100]) if finite.size else []
  return (f"| {label} | {len(table) - finite.size} | "
          + " | ".join(_percent(q) for q in quantiles) + " |"), len(table) - finite.size


def accuracy_section(table, figures: str, relative: str,
                     previous: Mapping | None = None) -> list[str]:
  accuracy = table.accuracy("validation")
  plots.accuracy_histogram(accuracy, os.path.join(figures, "accuracy_histogram.png"),
                           marks={name: accuracy[table.index(name)] for name in
                                  ("relu(x)", "swish(x)", "tanh(x)") if _has(table, name)})
  row, failed = _quantile_row("this table", table)
  lines = ["## The table", "",
           f"{len(table)} functions (equivalence classes); {failed} failed to train "
           "(no finite accuracy).", "",
           "| validation accuracy % | failed | min | 10% | 25% | median | 75% | 90% | 99% | max |",
           "|---|---|---|---|---|---|---|---|---|---|", row]
  if previous is not None:
    lines.append(_quantile_row(previous["label"], previous["table"])[0])
  lines += ["", f"![accuracy distribution]({relative}/accuracy_histogram.png)", ""]
  return lines


def _has(table, name) -> bool:
  try:
    table.index(name)
  except KeyError:
    return False
  return True


def _ranking(table) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
  """(validation accuracy, indices best first with failures last, index -> 1-based rank)."""
  validation = table.accuracy("validation")
  order = np.argsort(np.where(np.isfinite(validation), -validation, np.inf), kind="stable")
  return validation, order, {int(index): position + 1 for position, index in enumerate(order)}


def best_section(table, figures: str, relative: str, count: int = 10,
                 previous: Mapping | None = None) -> list[str]:
  validation, order, rank = _ranking(table)
  test = table.accuracy("test")
  lines = ["## The best functions against the baselines", "",
           "| rank | function | validation % | test % |", "|---|---|---|---|"]
  for index in order[:count]:
    lines.append(f"| {rank[int(index)]} | `{table.names[index]}` | "
                 f"{_percent(validation[index])} | {_percent(test[index])} |")
  old = None if previous is None else previous["table"]
  label = "" if old is None else previous["label"]
  lines += ["", "| baseline | rank | validation % | test % |"
            + ("" if old is None else f" {label} rank | {label} validation % |"),
            "|---|---|---|---|" + ("" if old is None else "---|---|")]
  if old is not None:
    old_validation, _, old_rank = _ranking(old)
  for name in BASELINES:
    if _has(table, name):
      index = table.index(name)
      row = (f"| `{name}` | {rank[index]} | {_percent(validation[index])} | "
             f"{_percent(test[index])} |")
      if old is not None and _has(old, name):
        row += f" {old_rank[old.index(name)]} | {_percent(old_validation[old.index(name)])} |"
      lines.append(row)
  best = [table.names[i] for i in order[:8] if math.isfinite(validation[i])]
  plots.function_shapes(best, os.path.join(figures, "best_functions.png"),
                        references=("relu(x)",),
                        scores={table.names[i]: validation[i] for i in order[:8]},
                        title="The 8 best functions (validation accuracy) beside relu")
  lines += ["", f"![best functions]({relative}/best_functions.png)", ""]
  return lines


def quality_section(quality: Mapping, figures: str, relative: str,
                    previous: Mapping | None = None) -> list[str]:
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
  rows = list(quality.items())
  if previous is not None:
    rows += [(f"{name} ({previous['label']})", values)
             for name, values in previous["replay"].get("quality", {}).items()
             if list(values["train_sizes"]) == sizes]
  for name, values in rows:
    cells = [f"{s:.3f} ({k:.3f})" if s is not None and k is not None else "-"
             for s, k in zip(values["spearman_median"], values["kendall_median"])]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", f"![surrogate quality]({relative}/surrogate_quality.png)", ""]
  return lines


def _replay_rows(summary: Mapping, suffix: str = "") -> list[str]:
  lines = []
  for name, values in summary.items():
    cells = []
    for key in ("evaluations_to_best", "evaluations_to_top1"):
      stats = values[key]
      cells.append(f"{_count(stats['median'])} ({_count(stats['q25'])}-{_count(stats['q75'])}), "
                   f"{100 * stats['reached']:.0f}%")
    lines.append(f"| {name}{suffix} | " + " | ".join(cells) + " |")
  return lines


def _target_text(saved: Mapping) -> str:
  tie = saved.get("tie", 0.0) or 0.0
  best = f"{_percent(saved['best_accuracy'])}%"
  if tie:
    return (f"the best: validation accuracy within {100 * tie:.2f} points (one standard "
            f"error) of the best, {best}")
  return f"the best: the best validation accuracy, {best}"


def replay_section(saved: Mapping, figures: str, relative: str,
                   previous: Mapping | None = None) -> list[str]:
  curves = {name: np.asarray([[math.nan if v is None else v for v in row]
                              for row in run["best_so_far"]], np.float64)
            for name, run in saved["strategies"].items()}
  plots.search_curves(curves, os.path.join(figures, "search_curves.png"),
                      reference=saved["best_accuracy"],
                      title="Replayed searches: best validation accuracy so far")
  lines = ["## Replayed searches", "",
           f"{len(saved['seeds'])} seeds per strategy, up to {saved['budget']} evaluations "
           f"each; a replay ends once it finds {_target_text(saved)}. Top 1%: validation "
           f"accuracy of at least {_percent(saved['top1_threshold'])}%."]
  if previous is not None:
    old = previous["replay"]["replay"]
    lines[-1] += (f" {previous['label']}: {len(old['seeds'])} seeds, {_target_text(old)}, top "
                  f"1% from {_percent(old['top1_threshold'])}%.")
  lines += ["", "| strategy | evaluations to the best (median, quartiles, seeds reaching) | "
            "evaluations to a top-1% function |", "|---|---|---|"]
  lines += _replay_rows(saved["summary"])
  if previous is not None:
    lines += _replay_rows(previous["replay"]["replay"]["summary"], f" ({previous['label']})")
  lines += ["", f"![search curves]({relative}/search_curves.png)", ""]
  return lines


def _cost_cells(stats: Mapping, num_epochs: int) -> str:
  """Epochs (median, quartiles, seeds reaching) and the median in full trainings."""
  median = stats["median"]
  trainings = "" if median is None or not math.isfinite(median) else (
      f"; median: the epochs of {median / num_epochs:g} full trainings")
  def short(value):
    return "never" if value is None or not math.isfinite(value) else f"{value:g}"
  return (f"{_count(median)} ({short(stats['q25'])}-{short(stats['q75'])}), "
          f"{100 * stats['reached']:.0f}%{trainings}")


def cost_section(replay_saved: Mapping, figures: str, relative: str) -> list[str]:
  """How well each epoch's accuracy ranks the final one and, when mode replay ran them
  (config.search.fidelity), the searches replayed by training epochs with and without
  successive halving; [] for a table without learning curves."""
  spearman = replay_saved.get("curve_spearman")
  cost = replay_saved.get("cost")
  if not spearman and not cost:
    return []
  lines = ["## Learning curves and successive halving", ""]
  if spearman:
    among_best = replay_saved.get("curve_spearman_best")
    rows = [("every function", spearman)] + (
        [(f"the best {among_best['share']:.0%} by final accuracy", among_best["values"])]
        if among_best else [])
    lines += ["Spearman rank correlation between the validation accuracy after epoch k and the "
              "final one (functions with both). Halving ranks the functions of a round: over "
              "the whole space for a broad strategy, among the best for one that works.", "",
              "| among, after epoch | "
              + " | ".join(str(k) for k in range(1, len(spearman) + 1)) + " |",
              "|---|" + "---|" * len(spearman)]
    lines += ["| " + label + " | " + " | ".join("-" if rho is None else f"{rho:.3f}"
                                                for rho in values) + " |"
              for label, values in rows]
    lines.append("")
  if cost:
    runs = cost["runs"]
    plots.cost_curves(
        {name: np.asarray([[math.nan if v is None else v for v in row]
                           for row in run["best_so_far"]], np.float64)
         for name, run in runs.items()},
        cost["grid"], os.path.join(figures, "cost_curves.png"),
        reference=cost["best_accuracy"],
        title="Replayed searches: best validation accuracy so far by training epochs")
    num_epochs = int(cost["num_epochs"])
    halved = [v for v in cost["variants"].values() if v["rungs"]]
    setting = (f"; successive halving over populations of {halved[0]['batch']}, rungs after "
               f"epochs {', '.join(map(str, halved[0]['rungs']))}, eta {halved[0]['eta']}"
               if halved else "")
    lines += [f"{len(cost['seeds'])} seeds per variant, each with an epoch budget of "
              f"{cost['epoch_budget']} ({cost['epoch_budget'] / num_epochs:g} full trainings of "
              f"{num_epochs} epochs){setting}. A function stopped after k epochs costs k; a "
              "function counts as found once the round that trained it fully ends. "
              "`name@P`: rounds of P functions without halving.", "",
              "| variant | epochs to the best (median, quartiles, seeds reaching) | epochs to a "
              "top-1% function | best tied with the table's at the budget |", "|---|---|---|---|"]
    for name, values in cost["summary"].items():
      lines.append(f"| {name} | {_cost_cells(values['epochs_to_best'], num_epochs)} | "
                   f"{_cost_cells(values['epochs_to_top1'], num_epochs)} | "
                   f"{100 * values['tied_at_budget']:.0f}% |")
    lines += ["", f"![search curves by epochs]({relative}/cost_curves.png)", ""]
  return lines


# Issue 25's targets for successive halving: aquasurf with it against aquasurf without it and
# against random search (one function at a time), as the most epochs it may take as a share.
HALVING_TARGETS = (("aquasurf", 1 / 2), ("random", 1 / 20))


def _halving_targets(cost: Mapping | None) -> list[str]:
  if not cost or "aquasurf+halving" not in cost["summary"]:
    return []
  summary = cost["summary"]
  ours = summary["aquasurf+halving"]["epochs_to_best"]["median"]
  lines = []
  for other, limit in HALVING_TARGETS:
    if other not in summary:
      continue
    theirs = summary[other]["epochs_to_best"]["median"]
    ratio = _ratio(ours, theirs)
    verdict = "met" if ratio <= limit else "missed"
    lines.append(f"- Median epochs to the best (tied): aquasurf with halving {_count(ours)}, "
                 f"{other} without {_count(theirs)}: ratio {ratio:.3f} (target: at most "
                 f"{limit:g}): {verdict}.")
  tied = summary["aquasurf+halving"]["tied_at_budget"]
  without = {name: summary[name]["tied_at_budget"] for name in summary
             if name.startswith("aquasurf") and name != "aquasurf+halving"
             and not name.startswith("aquasurf-local")}
  verdict = "met" if all(tied >= value for value in without.values()) else "missed"
  lines.append(f"- Seeds whose best at the epoch budget is tied with the table's: aquasurf "
               f"with halving {100 * tied:.0f}%, without "
               + ", ".join(f"{name} {100 * value:.0f}%" for name, value in without.items())
               + f" (target: no lower): {verdict}.")
  return lines


# Issue 15's targets: (summary key, strategy compared, the most aquasurf may take as a share).
SEARCH_TARGETS = (("evaluations_to_top1", "random", 1 / 3),
                  ("evaluations_to_top1", "evolution", 1.0),
                  ("evaluations_to_best", "random", 1 / 4))
QUALITY_TARGET = 0.85  # Spearman of the union surrogate fitted on 100 functions


def _search_targets(summary: Mapping, label: str) -> list[str]:
  lines = []
  for key, other, limit in SEARCH_TARGETS:
    if not {"aquasurf", other} <= set(summary):
      continue
    ours, theirs = summary["aquasurf"][key]["median"], summary[other][key]["median"]
    ratio = _ratio(ours, theirs)
    verdict = ("met" if ratio < 1 else "missed") if limit == 1.0 else (
        "met" if ratio <= limit else "missed")
    what = "a top-1% function" if key == "evaluations_to_top1" else "the best (tied)"
    bound = "fewer" if limit == 1.0 else f"at most {limit:.3f} of it"
    text = (f"edian evaluations to {what}: aquasurf {_count(ours)}, {other} {_count(theirs)}: "
            f"ratio {ratio:.3f} (target: {bound}): {verdict}.")
    lines.append(f"- {label}m{text}" if label else f"- M{text}")
  return lines


def _quality_target(quality: Mapping, label: str) -> list[str]:
  if "union" not in quality or 100 not in list(quality["union"]["train_sizes"]):
    return []
  at = list(quality["union"]["train_sizes"]).index(100)
  union = quality["union"]["spearman_median"][at]
  others = {name: values["spearman_median"][at] for name, values in quality.items()
            if name != "union"}
  above = all(union > value for value in others.values() if value is not None)
  verdict = "met" if union is not None and union >= QUALITY_TARGET and above else "missed"
  return [f"- {label}Spearman correlation of the union surrogate fitted on 100 functions: "
          f"{union:.3f} (target at least {QUALITY_TARGET} and above each ablation: "
          + ", ".join(f"{k} {v:.3f}" for k, v in others.items()) + f"): {verdict}."]


def targets_section(saved: Mapping | None, quality: Mapping,
                    previous: Mapping | None = None, cost: Mapping | None = None) -> list[str]:
  """Issue 15's targets, measured: aquasurf against random search and evolution, and the
  surrogate's quality; issue 25's for successive halving where `cost` (the replay by epochs)
  has them; the previous table's figures after this one's."""
  lines = ["## Targets", ""]
  if saved is not None:
    lines += _search_targets(saved["summary"], "")
  lines += _quality_target(quality, "")
  lines += _halving_targets(cost)
  if previous is not None:
    label = f"{previous['label']}: "
    lines += _search_targets(previous["replay"]["replay"]["summary"], label)
    lines += _quality_target(previous["replay"].get("quality", {}), label)
  return lines + [""]


def _paragraphs(texts: Sequence[str]) -> list[str]:
  """Markdown lines for the non-empty texts, a blank line after each."""
  return [line for text in texts if text for line in (text, "")]


def write(table, replay_saved: Mapping | None, path: str, *, title: str,
          introduction: Sequence[str] = (), discussion: Sequence[str] = (),
          previous: Mapping | None = None) -> str:
  """Writes the document at `path` and its figures in a folder beside it named after it
  (docs/digits-bench.md -> docs/digits-bench/); returns the path.

  `previous`: {"label": "v1", "table": an older version's table, "replay": its replay summary
  (mode replay's replay-summary.json)}, whose figures are shown beside this table's."""
  stem = os.path.splitext(os.path.basename(path))[0]
  figures = os.path.join(os.path.dirname(os.path.abspath(path)), stem)
  os.makedirs(figures, exist_ok=True)
  quality = (replay_saved or {}).get("quality", {})
  lines = [f"# {title}", ""] + _paragraphs(introduction)
  lines += accuracy_section(table, figures, stem, previous)
  lines += best_section(table, figures, stem, previous=previous)
  lines += quality_section(quality, figures, stem, previous)
  if replay_saved is not None:
    lines += replay_section(replay_saved["replay"], figures, stem, previous)
    lines += cost_section(replay_saved, figures, stem)
  lines += targets_section(None if replay_saved is None else replay_saved["replay"], quality,
                           previous, (replay_saved or {}).get("cost"))
  lines += _paragraphs(discussion)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  os.replace(path + ".tmp", path)
  return path
