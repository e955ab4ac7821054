"""What each `config.mode` of the launcher does: one function per mode, (config, workdir) ->
the text to print. Everything a mode writes goes to the workdir (process 0 only).

  train      train config.activations x config.seeds as one population: results.json,
             leaderboard.csv.
  features   output and Fisher features of config.activations: features.npz.
  search     the surrogate-guided search of config.search.space (actbench/search/loop.py):
             search.sqlite, leaderboard.csv, surrogate_map.png, best_functions.png,
             search_curve.png.
  benchmark  train every class of the space and write a benchmark table in the Act-Bench format
             (config.benchmark.table, plus its columnar cache), with the search outputs.
  replay     replay search strategies on a benchmark table (config.replay): replay.json,
             replay-summary.json, search_curves.png, surrogate_quality.png; UMAP layouts are
             kept in layouts/ for the next replay.
  report     rewrite the leaderboard and figures from what the workdir holds, without training.
  recover    rebuild a damaged search.sqlite from its journal of evaluations.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

from absl import logging
import jax
import numpy as np

from actbench import config_fields, errors, report
from actbench.expr import features
from actbench.report import plots

# The published table's metric keys, from the store's metric names.
TABLE_METRICS = {"train_accuracy": "Train Accuracy", "validation_accuracy": "Validation Accuracy",
                 "test_accuracy": "Test Accuracy", "train_loss": "Train Loss",
                 "validation_loss": "Validation Loss", "test_loss": "Test Loss"}
# The table's learning curves (tables.CURVE_KEYS), from the store's curve names (its
# `curve_key`s); "failed" is the store's curve of whether the class had failed by each epoch.
TABLE_CURVES = {"train_accuracy": "Train Accuracy Curve",
                "validation_accuracy": "Validation Accuracy Curve",
                "train_loss": "Train Loss Curve", "validation_loss": "Validation Loss Curve"}
FAILED_CURVE = "failed"
MODES = config_fields.MODES
WORKDIR_MODES = ("search", "benchmark", "replay", "report", "recover")  # the others: optional


class WorkdirError(errors.InputError, OSError):
  """The workdir cannot hold the run's files."""


def check_workdir(workdir: str) -> None:
  """Raises WorkdirError unless files can be created in `workdir` (or, when it does not exist
  yet, in its nearest existing parent, where it will be made): found before any work, not
  when the first results are written. Leaves nothing behind."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"workdir {workdir!r} cannot be made: {existing} is a file")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} is not writable: cannot create files in "
                       f"{existing} ({e.strerror or e})") from e


def run(config, workdir: str | None) -> str:
  """Runs config.mode after checking the config's fields (and completing it with every
  default), the mode and the workdir."""
  config = config_fields.checked(config)
  if workdir:
    check_workdir(workdir)
  elif config.mode in WORKDIR_MODES:
    raise WorkdirError(f"mode {config.mode!r} needs --workdir: its store and results live there")
  return globals()[f"run_{config.mode}"](config, workdir)


def run_train(config, workdir):
  from actbench.engine import train  # pylint: disable=import-outside-toplevel
  observer = _observer(config, workdir)
  try:
    result = train.train_population(config, list(config.activations), list(config.seeds),
                                    workdir=workdir, progress=True,
                                    on_epoch=observer.epoch if observer else None)
  finally:
    if observer is not None:
      observer.close()
      logging.info("watching (TensorBoard events, report.html) took %.2f s", observer.seconds)
  if workdir:
    for path in report.write(result, workdir):
      logging.info("wrote %s", path)
  return report.format_table(report.leaderboard(result))


def run_features(config, workdir):
  from actbench import fisher  # pylint: disable=import-outside-toplevel
  names = list(config.activations)
  fisher_result = fisher.features(config, names)
  outputs = features.outputs(names, normalize=bool(config.population.normalize))
  if workdir:
    logging.info("wrote %s", report.write_features(names, outputs, fisher_result, workdir))
  return (f"{len(names)} activations: output features {outputs.shape}, Fisher features "
          f"{fisher_result.features.shape} ({config.fisher.method}), "
          f"{len(fisher_result.failed)} failed")


def _observer(config, workdir):
  """Process 0's live report of a run (TensorBoard events, report.html: report/live.py), None
  where there is nothing to write."""
  if not workdir or jax.process_index() != 0 or not (config.report.tensorboard
                                                      or config.report.html):
    return None
  from actbench.report import live  # pylint: disable=import-outside-toplevel
  return live.LiveReport(config, workdir)


def run_search(config, workdir, *, exhaustive: bool = False):
  from actbench import search  # pylint: disable=import-outside-toplevel
  observer = _observer(config, workdir)
  try:
    summary = search.run(config, workdir, exhaustive=exhaustive, observer=observer)
    if jax.process_index() != 0:
      return ""
    rows = _search_outputs(workdir, summary.classes, summary.evaluations, summary.embedding,
                           config)
    text = report.format_table(rows)
    if observer is not None:  # the final figures and page
      observer.finish(summary.classes, summary.evaluations, summary.provenance, rows=rows)
  finally:
    if observer is not None:
      observer.close()
      logging.info("watching (TensorBoard events, report.html) took %.2f s", observer.seconds)
  done = len(summary.evaluations)
  failed = sum(ev.status == "failed" for ev in summary.evaluations.values())
  stopped = sum(ev.status == "stopped" for ev in summary.evaluations.values())
  return (f"{done} of {len(summary.classes)} classes evaluated ({failed} failed"
          f"{f', {stopped} stopped early by successive halving' if stopped else ''}); "
          f"results in {workdir}\n{text}")


def run_benchmark(config, workdir):
  from actbench import search, tables  # pylint: disable=import-outside-toplevel
  text = run_search(config, workdir, exhaustive=True)
  if jax.process_index() != 0:
    return ""
  with search.open_store(config, workdir) as db:
    classes, evaluations = db.classes(), db.evaluations()
    if len(evaluations) < len(classes):  # others train the rest: the last to record writes
      holders = sorted(set(db.claimed_ids().values()))
      return (f"{text}\n{len(classes) - len(evaluations)} classes are still being trained by "
              f"{', '.join(holders) or 'other workers'}: the worker that records the last one "
              "writes the benchmark table")
    table = benchmark_table(classes, evaluations, db.features(search.FISHER)[0])
  path = os.path.join(workdir, config.benchmark.table)
  tables.write(table, path)
  tables.load(path)  # builds the columnar cache beside the table
  return f"{text}\nbenchmark table of {len(table)} functions: {path}"


def benchmark_table(classes, evaluations, fisher_rows):
  """The Act-Bench-format table of the evaluated classes, in class order. A failed class keeps
  its losses; its accuracies are NaN and "Diverged" is 1.

  The learning curves (TABLE_CURVES) hold each epoch's value, NaN where the class counted as
  failed after that epoch (its "failed" curve, and for a failed class its last epoch): a
  failed class's curves end in NaN as its accuracies are NaN, so that an accuracy curve's last
  value is the final figure. A table of classes without curves has none."""
  from actbench import tables  # pylint: disable=import-outside-toplevel
  ids = sorted(evaluations)
  metrics = {key: np.full(len(ids), np.nan) for key in (*TABLE_METRICS.values(), "Runtime (s)",
                                                         "Diverged")}
  curves = {key: [] for key in TABLE_CURVES.values()}  # per class, its values
  for row, class_id in enumerate(ids):
    evaluation = evaluations[class_id]
    failed = evaluation.status != "ok"
    for name, key in TABLE_METRICS.items():
      value = evaluation.metrics.get(name, math.nan)
      metrics[key][row] = math.nan if failed and name.endswith("accuracy") else value
    metrics["Runtime (s)"][row] = evaluation.runtime_s
    metrics["Diverged"][row] = float(failed)
    values = {key: np.asarray(evaluation.curve(name), np.float64)
              for name, key in TABLE_CURVES.items()}
    epochs = max(len(curve) for curve in values.values())
    # Whether the class counted as failed after each epoch, as successive halving would have
    # seen it there (a flag the store lacks counts as not failed; an evaluation that was not
    # finite once may be again later); a failed class had failed by its last epoch whatever
    # the flags say, as its figures say.
    flags = np.zeros(epochs, bool)
    recorded = np.asarray(evaluation.curve(FAILED_CURVE), np.float64)[:epochs]
    flags[:len(recorded)] = np.nan_to_num(recorded) != 0
    if failed and epochs:
      flags[-1] = True
    for key, curve in values.items():
      curves[key].append(np.where(flags[:len(curve)], np.nan, curve))
  width = {key: max((len(curve) for curve in rows), default=0) for key, rows in curves.items()}
  padded = {}
  for key, rows in curves.items():
    if width[key]:  # the store recorded this curve for some class
      padded[key] = np.full((len(ids), width[key]), np.nan)
      for row, curve in enumerate(rows):
        padded[key][row, :len(curve)] = curve
  fisher_rows = np.asarray(fisher_rows, np.float32)
  return tables.Table(names=[classes[i][0] for i in ids],
                     equivalents=[list(classes[i][1:]) for i in ids], metrics=metrics,
                     fisher=fisher_rows[ids] if fisher_rows.shape[1] else
                     np.zeros((len(ids), 0), np.float32), curves=padded)


def run_replay(config, workdir):
  from actbench import search, tables  # pylint: disable=import-outside-toplevel
  from actbench.search import (  # pylint: disable=import-outside-toplevel
      featurize, replay, strategies, surrogate)
  cfg = config.replay
  table_path = cfg.table or _workdir_table(config, workdir)
  if not table_path:
    raise config_fields.ConfigError("config.replay.table is empty and the workdir holds no "
                                    "benchmark table: "
                     "give a table's path or a published name (cnn, resnet, vit)")
  table = tables.load(table_path, progress=True)
  _replay_fidelity(config, table)  # a mistake is said now, not after the replays
  # The table's space is config.search's (the benchmark space by default): evolution mutates
  # within it.
  candidates = strategies.Candidates.from_table(table, schema=config.search.space)
  choices = search.operator_choices(config)
  accuracies = table.accuracy("validation")
  result = replay.replay(candidates, accuracies, strategies=tuple(cfg.strategies),
                         seeds=range(int(cfg.seeds)), budget=int(cfg.budget),
                         tie=float(cfg.tie),
                         layout_cache=os.path.join(workdir, "layouts") if workdir else None,
                         feature_set=config.surrogate.features, progress=True,
                         fisher_budget=featurize.Plan.from_config(config),  # as its search
                         strategy_options={"evolution": {"choices": choices},
                                           "aquasurf-local": {"choices": choices}})
  plan = result.fisher_budget
  lines = [f"replay of {len(table)} functions from {table_path}: {int(cfg.seeds)} seeds, "
           f"budget {int(cfg.budget)}" + (
               "" if plan is None else f"; the surrogate's Fisher budget {plan['budget']} "
               f"({plan['choice']}, rounds of {plan['round_size']} every {plan['every']})")]
  summary = result.summary()
  lines += [f"  {name}: {json.dumps(values)}" for name, values in summary.items()]
  if workdir and jax.process_index() == 0:
    quality = {}
    for feature_set in cfg.quality_features:
      layout = surrogate.embed(candidates, feature_set)
      pool = int(np.sum(np.isfinite(layout).all(axis=1) & np.isfinite(accuracies)))
      sizes = [size for size in cfg.quality_sizes if 0 < size < pool]
      if sizes:
        quality[feature_set] = surrogate.quality(layout, accuracies, sizes,
                                                 seeds=range(int(cfg.seeds)))
    saved = {"table": table_path, "replay": result.to_json(), "quality": replay.jsonable(quality)}
  cost, cost_lines = _cost_replay(config, table, candidates, accuracies, choices, workdir)
  lines += cost_lines
  if workdir and jax.process_index() == 0:
    saved.update(cost)
    report.write_json(saved, os.path.join(workdir, "replay.json"))
    # The figures without the per-seed arrays: small enough to keep beside a report.
    brief = {key: value for key, value in saved["replay"].items() if key != "strategies"}
    medians = {name: {key: values[key] for key in ("train_sizes", "spearman_median",
                                                   "kendall_median")}
               for name, values in saved["quality"].items()}
    summary = {"table": table_path, "replay": brief, "quality": medians}
    if "cost" in cost:
      summary["cost"] = {key: value for key, value in cost["cost"].items() if key != "runs"}
    for key in ("curve_spearman", "curve_spearman_best"):
      if key in cost:
        summary[key] = cost[key]
    report.write_json(summary, os.path.join(workdir, "replay-summary.json"))
    _replay_figures(workdir, result, quality, float(np.nanmax(accuracies)))
  return "\n".join(lines)


VALIDATION_CURVE = "Validation Accuracy Curve"


def _replay_fidelity(config, table):
  """config.search.fidelity's halving for a replay of `table`, None when off. Raises
  ConfigError when the table has no learning curves to halve on, or its epochs are not the
  last rung's: said before any replay runs."""
  from actbench.engine import halving  # pylint: disable=import-outside-toplevel
  cfg = config.search.fidelity
  if not cfg.rungs:
    return None
  curves = table.curves.get(VALIDATION_CURVE)
  if curves is None:
    raise config_fields.ConfigError(
        f"config.search.fidelity.rungs is set, but the table has no {VALIDATION_CURVE!r} "
        "(learning curves) to replay successive halving on; set it to () for this table")
  fidelity = halving.Fidelity(tuple(cfg.rungs), int(cfg.eta))
  if fidelity.rungs[-1] != curves.shape[1]:
    raise config_fields.ConfigError(
        f"config.search.fidelity.rungs must end at the table's {curves.shape[1]} epochs of "
        f"learning curves, got {list(fidelity.rungs)}")
  return fidelity


def _cost_replay(config, table, candidates, accuracies, choices, workdir):
  """Where the table has learning curves: how well each epoch's accuracy ranks the final one
  (Spearman per epoch), and, with config.search.fidelity.rungs, the strategies replayed by
  their cost in training epochs (search/cost_replay.py): one function at a time and in rounds
  of config.search.population_size without halving, and those rounds with halving. Returns
  (what goes into replay.json, lines to print)."""
  from actbench.search import cost_replay, replay  # pylint: disable=import-outside-toplevel
  curves = table.curves.get(VALIDATION_CURVE)
  if curves is None:
    return {}, []
  spearman = cost_replay.curve_rank_correlation(curves, accuracies)
  among_best = cost_replay.curve_rank_correlation(curves, accuracies,
                                                  best=cost_replay.BEST_SHARE)
  saved = {"curve_spearman": replay.jsonable(spearman),
           "curve_spearman_best": {"share": cost_replay.BEST_SHARE,
                                   "values": replay.jsonable(among_best)}}
  lines = [f"  Spearman of the accuracy after each epoch with the final one{label}: " + ", ".join(
      f"{k}: {rho:.3f}" for k, rho in enumerate(values, 1))
           for label, values in (("", spearman), (
               f" among the best {cost_replay.BEST_SHARE:.0%}", among_best))]
  fidelity = _replay_fidelity(config, table)
  if fidelity is None:
    return saved, lines
  population = int(config.search.population_size)
  variants = cost_replay.make_variants(tuple(config.replay.strategies),
                                       batches=(1, population), fidelity=fidelity,
                                       population=population)
  tie = float(config.replay.tie)
  budget = int(config.replay.epoch_budget) or cost_replay.random_search_budget(
      accuracies, curves.shape[1], tie=tie)
  result = cost_replay.replay_by_cost(
      candidates, accuracies, curves, variants, seeds=range(int(config.replay.seeds)),
      epoch_budget=budget, tie=tie, feature_set=config.surrogate.features,
      layout_cache=os.path.join(workdir, "layouts") if workdir else None, progress=True,
      strategy_options={"evolution": {"choices": choices}, "aquasurf-local": {"choices": choices}})
  saved["cost"] = result.to_json()
  lines.append(f"  by epochs (budget {budget}, rungs {list(fidelity.rungs)}, eta "
               f"{fidelity.eta}, populations of {population}):")
  lines += [f"  {name}: {json.dumps(values)}" for name, values in result.summary().items()]
  if workdir and jax.process_index() == 0:
    plots.cost_curves({name: run.best_so_far for name, run in result.runs.items()},
                      result.grid, os.path.join(workdir, "cost_curves.png"),
                      reference=result.best_accuracy,
                      title="Replay: best validation accuracy so far by training epochs")
  return saved, lines


def run_recover(config, workdir):
  """Rebuilds a damaged search store from its journal (see search/recovery.py)."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  report = search.recover(config, workdir)
  if report["intact"]:
    return (f"{report['location']} is intact; {report['from_journal']} evaluations "
            "replayed from the journal")
  features = ", ".join(f"{rows} {kind}" for kind, rows in report["features"].items()) or "none"
  return (f"rebuilt {search.store_path(workdir)}: {report['from_journal']} evaluations from "
          f"the journal, {report['from_file']} more from the damaged file, feature rows kept: "
          f"{features} (the rest are computed again by the next run); the damaged file is "
          f"{report['moved_to']}{_skipped(report)}. Rerun the search to continue.")


def _skipped(report) -> str:
  skipped = {reason: n for reason, n in report.get("skipped", {}).items() if n}
  if not skipped:
    return ""
  return ("; skipped, never mixed in: "
          + ", ".join(f"{n} of another {reason}" if reason in ("recipe", "data", "model")
                      else f"{n} {reason}" for reason, n in skipped.items()))


def run_report(config, workdir):
  """Rewrites the leaderboard, the figures and report.html from the workdir's store (again every
  config.report.watch_s seconds until its search ends, when set), and the replay's figures
  and config.report.document from replay.json."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  texts = []
  if search.has_store(config, workdir):
    texts.append(_store_report(config, workdir))
    watch = float(config.report.watch_s)
    while watch and not _search_ended(config, workdir):
      try:
        time.sleep(watch)
      except KeyboardInterrupt:
        break
      texts[-1] = _store_report(config, workdir)
  replay_path = os.path.join(workdir, "replay.json")
  if os.path.exists(replay_path):
    with open(replay_path, encoding="utf-8") as f:
      saved = json.load(f)
    curves = {name: np.asarray(values["best_so_far"], np.float64)
              for name, values in saved["replay"]["strategies"].items()}
    texts.append("wrote " + plots.search_curves(curves, os.path.join(workdir,
                                                                     "search_curves.png")))
  document_path = config.report.document
  table_path = _workdir_table(config, workdir)
  if document_path and table_path:
    from actbench import tables  # pylint: disable=import-outside-toplevel
    from actbench.report import document  # pylint: disable=import-outside-toplevel
    saved = None
    if os.path.exists(replay_path):
      with open(replay_path, encoding="utf-8") as f:
        saved = json.load(f)
    previous = None
    if config.report.previous_table:
      with open(config.report.previous_replay, encoding="utf-8") as f:
        previous = {"label": config.report.previous_label,
                    "table": tables.load(config.report.previous_table), "replay": json.load(f)}
    texts.append("wrote " + document.write(
        tables.load(table_path), saved, document_path, title=config.report.title,
        introduction=[config.report.introduction, config.report.recipe],
        discussion=[config.report.discussion], previous=previous))
  if not texts:
    raise WorkdirError(f"nothing to report in {workdir}: no search.sqlite and no replay.json")
  return "\n".join(texts)


def _store_report(config, workdir) -> str:
  """leaderboard.csv, the figures and report.html from the workdir's store (a SQLite file, or
  config.search.store's database: a search other machines run)."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  from actbench.report import live  # pylint: disable=import-outside-toplevel
  with search.open_store(config, workdir, create=False) as db:
    if not db.num_classes:
      raise WorkdirError(f"nothing to report: {db.location} holds no search yet")
    classes, evaluations = db.classes(), db.evaluations()
    rows = _search_outputs(workdir, classes, evaluations, search.stored_embedding(config, db),
                           config)
    text = report.format_table(rows)
    if config.report.html:
      path = live.write_page(os.path.join(workdir, live.PAGE), config, classes, evaluations,
                             rows=rows, provenance=search.provenance(db))
      text += f"\nwrote {path}"
  return text


def _search_ended(config, workdir) -> bool:
  """Whether the workdir's search has evaluated its budget (config.search.budget, or every
  class) with no class still claimed by a worker."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  with search.open_store(config, workdir, create=False) as db:
    wanted = min(int(config.search.budget), db.num_classes)
    return len(db.evaluated_ids()) >= wanted and not db.claimed_ids()


def _workdir_table(config, workdir) -> str:
  """The benchmark table mode benchmark wrote in the workdir, if any."""
  path = os.path.join(workdir or "", config.benchmark.table)
  return path if workdir and os.path.exists(path) else ""


def _search_outputs(workdir, classes, evaluations, embedding, config) -> list[dict]:
  """leaderboard.csv, the best functions' shapes, the search curve and the surrogate map;
  returns the leaderboard's rows (for the printed table and report.html)."""
  from actbench.report import live  # pylint: disable=import-outside-toplevel
  rows = report.store_leaderboard(classes, evaluations)
  report.write_leaderboard(rows, workdir)
  ok = [row for row in rows if not row["diverged"]]
  best = [row["activation"] for row in ok[:int(config.report.best_functions)]]
  if best:
    plots.function_shapes(best, os.path.join(workdir, "best_functions.png"),
                          references=("relu(x)",),
                          scores={row["activation"]: row["validation_accuracy"] for row in ok},
                          title="Best functions found (validation accuracy) beside relu")
  live.draw_figures(workdir, classes, evaluations, embedding, config)
  return rows


def _replay_figures(workdir, result, quality, best):
  plots.search_curves({name: values["best_so_far"] for name, values
                       in result.to_json()["strategies"].items()},
                      os.path.join(workdir, "search_curves.png"), reference=best,
                      title="Replay: best validation accuracy so far")
  plots.quality_curves(quality, os.path.join(workdir, "surrogate_quality.png"))

