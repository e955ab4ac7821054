"""Leaderboards of trained activations: rows, a printed table, CSV and JSON in the workdir."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from actbench.engine.train import PopulationResult

COLUMNS = ("rank", "activation", "validation_accuracy", "test_accuracy", "train_loss",
           "diverged", "stopped_at_epoch", "seeds", "runtime_s")


def leaderboard(result: PopulationResult) -> list[dict]:
  """One row per activation (medians over seeds), best validation accuracy first; activations
  without a finite validation accuracy (failed) last."""
  rows = []
  for activation, summary in result.by_activation().items():
    rows.append({"activation": activation,
                 "validation_accuracy": summary.get("validation_accuracy", math.nan),
                 "test_accuracy": summary.get("test_accuracy", math.nan),
                 "train_loss": summary.get("train_loss", math.nan),
                 "diverged": summary["diverged"],
                 "stopped_at_epoch": summary["epochs"] if summary.get("stopped") else "",
                 "seeds": len(summary["seeds"]), "runtime_s": summary["runtime_s"]})
  return _ranked(rows)


def store_leaderboard(classes: Sequence[Sequence[str]],
                      evaluations: Mapping[int, Any]) -> list[dict]:
  """The leaderboard of a search or benchmark store: one row per evaluated equivalence class,
  named by its representative (`store.Evaluation`s, medians over seeds). A class successive
  halving stopped early is marked with the epoch it stopped at, its accuracy is that epoch's."""
  rows = []
  for class_id, evaluation in evaluations.items():
    metrics = evaluation.metrics
    stopped = evaluation.status == "stopped"
    rows.append({"activation": classes[class_id][0],
                 "validation_accuracy": metrics.get("validation_accuracy", math.nan),
                 "test_accuracy": metrics.get("test_accuracy", math.nan),
                 "train_loss": metrics.get("train_loss", math.nan),
                 "diverged": evaluation.status == "failed",
                 "stopped_at_epoch": int(metrics.get("epochs", 0)) if stopped else "",
                 "seeds": len(evaluation.per_seed), "runtime_s": evaluation.runtime_s})
  return _ranked(rows)


def _ranked(rows: list[dict]) -> list[dict]:
  """Best validation accuracy first; functions stopped early after every fully trained one
  (an accuracy after fewer epochs is not comparable); failed functions (a seed diverged, or
  no accuracy) last."""
  rows.sort(key=lambda row: (bool(row["diverged"]), row.get("stopped_at_epoch", "") != "",
                             math.isnan(row["validation_accuracy"]),
                             -_finite_or(row["validation_accuracy"], 0.0), row["activation"]))
  for rank, row in enumerate(rows, 1):
    row["rank"] = rank
  return rows


def _finite_or(value: float, default: float) -> float:
  return value if math.isfinite(value) else default


def format_table(rows: list[dict], limit: int = 20) -> str:
  """A fixed-width text table of the first `limit` rows."""
  header = f"{'rank':>4}  {'validation':>10}  {'test':>6}  {'failed':>6}  activation"
  lines = [header, "-" * len(header)]
  for row in rows[:limit]:
    stopped = row.get("stopped_at_epoch", "")
    note = f"  (stopped at epoch {stopped})" if stopped != "" else ""
    lines.append(f"{row['rank']:>4}  {_percent(row['validation_accuracy']):>10}  "
                 f"{_percent(row['test_accuracy']):>6}  {'yes' if row['diverged'] else '':>6}  "
                 f"{row['activation']}{note}")
  if len(rows) > limit:
    lines.append(f"... {len(rows) - limit} more in leaderboard.csv")
  return "\n".join(lines)


def _percent(value: float) -> str:
  return f"{100 * value:.2f}" if math.isfinite(value) else "-"


def write(result: PopulationResult, workdir: str) -> list[str]:
  """Writes results.json and leaderboard.csv into the workdir (process 0 only); their paths."""
  if jax.process_index() != 0:
    return []
  json_path = write_json(result.to_json(), os.path.join(workdir, "results.json"))
  return [json_path, write_leaderboard(leaderboard(result), workdir)]


def write_json(value, path: str) -> str:
  """Writes JSON atomically (a crash never leaves half a file); NaN stays NaN."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, allow_nan=True)
  os.replace(path + ".tmp", path)
  return path


def write_leaderboard(rows: list[dict], workdir: str) -> str:
  """leaderboard.csv in the workdir, atomically."""
  os.makedirs(workdir, exist_ok=True)
  csv_path = os.path.join(workdir, "leaderboard.csv")
  with open(csv_path + ".tmp", "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(csv_path + ".tmp", csv_path)
  return csv_path


def write_features(names, outputs, fisher_result, workdir: str) -> str | None:
  """Writes features.npz (names, output features, Fisher features, failures as JSON)."""
  if jax.process_index() != 0:
    return None
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "features.npz")
  failed = {names[i]: reason for i, reason in fisher_result.failed.items()}
  with open(path + ".tmp", "wb") as f:
    np.savez(f, names=np.asarray(names), outputs=outputs, fisher=fisher_result.features,
             fisher_failed=json.dumps(failed))
  os.replace(path + ".tmp", path)
  return path
