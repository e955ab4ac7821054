"""surrogate.leave_one_out_spearman against a brute-force reference: n refits of scikit-learn's
KNeighborsRegressor, each without the function it predicts, and scipy's Spearman correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.neighbors import KNeighborsRegressor

from actbench.search import surrogate


def _brute_force(points, accuracies, k, failure_value):
  """Each placed function of finite accuracy predicted by a regressor fitted on all the other
  placed ones (failed ones at failure_value, or left out when it is None)."""
  points = np.asarray(points, np.float64)
  accuracies = np.asarray(accuracies, np.float64)
  placed = [i for i in range(len(points)) if np.isfinite(points[i]).all()]
  usable = [i for i in placed if failure_value is not None or math.isfinite(accuracies[i])]
  truths, predictions = [], []
  for i in usable:
    if not math.isfinite(accuracies[i]):
      continue
    others = [j for j in usable if j != i]
    targets = [accuracies[j] if math.isfinite(accuracies[j]) else failure_value for j in others]
    regressor = KNeighborsRegressor(n_neighbors=k).fit(points[others], targets)
    predictions.append(regressor.predict(points[[i]])[0])
    truths.append(accuracies[i])
  return stats.spearmanr(predictions, truths).statistic


def _problem(n, dims, seed):
  """Points in general position (no ties among distances) and an accuracy that depends on
  them smoothly plus noise, so the correlation is neither 0 nor 1."""
  rng = np.random.default_rng(seed)
  points = rng.normal(size=(n, dims))
  accuracies = 0.6 + 0.1 * np.sin(2 * points[:, 0]) + 0.05 * rng.normal(size=n)
  return points, accuracies


@pytest.mark.parametrize("n,dims,k,seed", [(6, 2, 3, 0), (40, 2, 3, 1), (200, 2, 3, 2),
                                           (60, 5, 1, 3), (60, 2, 7, 4)])
def test_equals_brute_force_refits(n, dims, k, seed):
  points, accuracies = _problem(n, dims, seed)
  expected = _brute_force(points, accuracies, k, 0.0)
  assert np.isfinite(expected)
  assert surrogate.leave_one_out_spearman(points, accuracies, k) == pytest.approx(expected,
                                                                                   abs=1e-12)


@pytest.mark.parametrize("failure_value", [0.0, 0.3, None])
def test_failed_and_unplaced_functions_as_the_surrogate_treats_them(failure_value):
  # Failed functions are neighbours at failure_value (or absent with None), never predicted;
  # functions without finite coordinates take no part at all.
  points, accuracies = _problem(50, 2, 5)
  accuracies[[3, 10, 11, 30]] = np.nan
  points[[7, 12]] = np.nan
  points[20, 1] = np.inf
  expected = _brute_force(points, accuracies, 3, failure_value)
  got = surrogate.leave_one_out_spearman(points, accuracies, failure_value=failure_value)
  assert got == pytest.approx(expected, abs=1e-12)
  if failure_value is not None:  # the failures do move some predictions
    assert got != pytest.approx(_brute_force(points, accuracies, 3, None), abs=1e-6)


def test_matches_surrogate_predict_for_each_left_out_function():
  # The same predictor as the search's: Surrogate.predict with the history of every other
  # function, one function at a time, ranks them identically.
  points, accuracies = _problem(30, 2, 6)
  model = surrogate.Surrogate(points)
  predictions = [model.predict({j: accuracies[j] for j in range(30) if j != i})[i]
                 for i in range(30)]
  expected = stats.spearmanr(predictions, accuracies).statistic
  assert surrogate.leave_one_out_spearman(points, accuracies) == pytest.approx(expected,
                                                                               abs=1e-12)


def test_nan_below_k_plus_2_functions_and_for_constant_predictions():
  points, accuracies = _problem(12, 2, 7)
  for k in (1, 3, 5):
    # k + 1 functions: each prediction is the mean of all the others, so the correlation would
    # be -1 by construction; NaN says there is nothing to measure yet.
    assert math.isnan(surrogate.leave_one_out_spearman(points[:k + 1], accuracies[:k + 1], k))
    assert np.isfinite(surrogate.leave_one_out_spearman(points[:k + 2], accuracies[:k + 2], k))
  # Failures do not count towards the minimum (they are never predicted).
  failed = accuracies.copy()
  failed[:8] = np.nan
  assert math.isnan(surrogate.leave_one_out_spearman(points, failed))
  # Every function equally accurate: constant predictions, no ranking.
  assert math.isnan(surrogate.leave_one_out_spearman(points, np.full(12, 0.5)))


def test_shape_errors():
  with pytest.raises(ValueError, match="expected points"):
    surrogate.leave_one_out_spearman(np.zeros(5), np.zeros(5))
  with pytest.raises(ValueError, match="expected points"):
    surrogate.leave_one_out_spearman(np.zeros((5, 2)), np.zeros(4))
