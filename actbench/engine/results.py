"""What a population training returns: per-run metrics and learning curves, summed up per
activation as the search records them.

    result = train.train_population(config, ["relu(x)", "swish(x)"], [0, 1])
    result.by_activation()["relu(x)"]["validation_accuracy_curve"]   # a value per epoch
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CURVES = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")


@dataclasses.dataclass
class PopulationResult:
  """Per-run results (lists in member order) of a population training. A run is one
  (activation, seed, fold) triple; fold is 0 unless config.dataset.folds cross-validates."""

  activations: list[str]
  seeds: list[int]
  metrics: dict[str, list[float]]  # train/validation/test _loss and _accuracy
  diverged: list[bool]
  runtime_s: list[float]  # the population's wall time shared equally among its members
  # Per population group: its members, its fold, per-epoch metrics, the epoch it resumed
  # from.
  history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  folds: list[int] = dataclasses.field(default_factory=list)  # empty: every run is fold 0
  divergence: str = "fail"  # config.train.divergence: how a diverged run counts (by_activation)
  num_classes: int = 0  # for the chance accuracy a diverged run scores under "chance"
  # Learning curves: CURVES name -> per run, its value after each epoch it trained (a run
  # stopped early by successive halving has a shorter one); the validation ones only where the
  # data has a validation split.
  curves: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
  # Per run, after each epoch: whether it had failed by then (diverged, or a validation loss
  # that is not finite), as `diverged` says of its last epoch.
  curve_failed: list[list[bool]] = dataclasses.field(default_factory=list)
  epochs: list[int] = dataclasses.field(default_factory=list)  # per run: epochs it trained
  num_epochs: int = 0  # config.train.num_epochs: a run with fewer epochs was stopped early

  def members(self) -> list[dict[str, Any]]:
    rows = []
    folds = self.folds or [0] * len(self.activations)
    for i, (activation, seed) in enumerate(zip(self.activations, self.seeds)):
      row = {"activation": activation, "seed": seed, "diverged": self.diverged[i],
             "runtime_s": self.runtime_s[i]}
      if self.folds:
        row["fold"] = folds[i]
      row.update({name: values[i] for name, values in self.metrics.items()})
      if self.epochs:
        row["epochs"] = self.epochs[i]
      row.update({f"{name}_curve": values[i] for name, values in self.curves.items()})
      rows.append(row)
    return rows

  def by_activation(self) -> dict[str, dict[str, Any]]:
    """Per activation: each seed's mean over its folds, then the median over seeds (NaN-aware).

    With divergence "fail" (the default) an activation is diverged when any run diverged.
    With "chance" a diverged run scores chance accuracy (1 / num_classes) and no loss, so an
    activation's accuracy is what one training run yields on average, and it is diverged only
    when every run diverged.

    Each learning curve (`<name>_curve`) is summed up the same way epoch by epoch, with the
    runs that had failed by that epoch, so that its last value is the final figure;
    `failed_curve` says whether the activation counted as failed (diverged) after each epoch.
    `epochs` is what it trained; `stopped` says successive halving stopped it early."""
    chance_rule = self.divergence == "chance"
    chance = 1.0 / self.num_classes if self.num_classes else math.nan
    result = {}
    for activation in dict.fromkeys(self.activations):
      index = [i for i, a in enumerate(self.activations) if a == activation]
      flags = [bool(self.diverged[i]) for i in index]
      seeds = list(dict.fromkeys(self.seeds[i] for i in index))
      summary = {"seeds": seeds, "diverged": all(flags) if chance_rule else any(flags),
                 "diverged_runs": sum(flags), "runs": len(index),
                 "runtime_s": float(np.sum([self.runtime_s[i] for i in index]))}
      run_seeds = [self.seeds[i] for i in index]
      rule = chance if chance_rule else None
      for name, values in self.metrics.items():
        summary[name] = summed_over_runs(name, [values[i] for i in index], flags, run_seeds,
                                         seeds, rule)
      if self.epochs:
        epochs = max(self.epochs[i] for i in index)
        summary["epochs"] = epochs
        summary["stopped"] = bool(self.num_epochs) and epochs < self.num_epochs
      if self.curve_failed:  # whether the activation had failed by each epoch, as above
        length = max(len(self.curve_failed[i]) for i in index)
        failed_by = [[_at(self.curve_failed[i], e, True) for i in index] for e in range(length)]
        summary["failed_curve"] = [all(f) if chance_rule else any(f) for f in failed_by]
      for name, runs in self.curves.items():
        length = max(len(runs[i]) for i in index)
        summary[f"{name}_curve"] = [
            summed_over_runs(name, [_at(runs[i], e) for i in index],
                             [_at(self.curve_failed[i], e, True) for i in index], run_seeds,
                             seeds, rule)
            for e in range(length)]
      result[activation] = summary
    return result

  def select(self, indices: Sequence[int]) -> PopulationResult:
    """The runs at `indices` as a result of their own (e.g. some seeds' only); no history."""
    indices = list(indices)
    return PopulationResult(
        [self.activations[i] for i in indices], [self.seeds[i] for i in indices],
        {name: [values[i] for i in indices] for name, values in self.metrics.items()},
        [self.diverged[i] for i in indices], [self.runtime_s[i] for i in indices],
        folds=[self.folds[i] for i in indices] if self.folds else [],
        divergence=self.divergence, num_classes=self.num_classes,
        curves={name: [runs[i] for i in indices] for name, runs in self.curves.items()},
        curve_failed=[self.curve_failed[i] for i in indices] if self.curve_failed else [],
        epochs=[self.epochs[i] for i in indices] if self.epochs else [],
        num_epochs=self.num_epochs)

  def to_json(self) -> dict[str, Any]:
    return {"members": self.members(), "by_activation": self.by_activation(),
            "history": self.history}


def summed_over_runs(name: str, values, failed, run_seeds, seeds,
                     chance: float | None = None) -> float:
  """One figure of an activation's runs: each seed's mean over its folds, then the median over
  seeds, NaN-aware; with `chance` (the "chance" divergence rule), a failed run's accuracy is
  chance and its loss missing."""
  per_seed = []
  for seed in seeds:
    rows = [k for k, s in enumerate(run_seeds) if s == seed]
    chosen = np.array([values[k] for k in rows], np.float64)
    if chance is not None:
      failures = np.array([failed[k] for k in rows], bool)
      chosen = np.where(failures, chance if name.endswith("accuracy") else np.nan, chosen)
    per_seed.append(np.nanmean(chosen) if np.isfinite(chosen).any() else np.nan)
  per_seed = np.asarray(per_seed)
  return float(np.nanmedian(per_seed)) if np.isfinite(per_seed).any() else np.nan


def _at(values, epoch: int, missing=math.nan):
  """values[epoch], or `missing` past the end (a run stopped before that epoch)."""
  return values[epoch] if epoch < len(values) else missing


def rung_score(summary: dict[str, Any], epoch: int) -> float:
  """What successive halving ranks an activation by after `epoch` (1-based): its validation
  accuracy there (`by_activation`'s curve), NaN where it counted as failed by then."""
  if summary["failed_curve"][epoch - 1]:
    return math.nan
  return summary["validation_accuracy_curve"][epoch - 1]
