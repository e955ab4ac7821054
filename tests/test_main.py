"""The launcher end to end: the quickstart config shrunk to seconds."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from actbench import fisher
from actbench.expr import features
from configs import quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "actbench.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True)


@pytest.mark.slow
def test_train_mode_writes_results_and_prints_a_leaderboard(tmp_path):
  process = run_main("--config=configs/quickstart.py:smoke", f"--workdir={tmp_path}",
                     "--config.mode=train",
                     "--config.activations=('relu(x)','reciprocal(zero(x))','tanh(x)')")
  assert process.returncode == 0, process.stderr[-3000:]
  with open(tmp_path / "leaderboard.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [row["rank"] for row in rows] == ["1", "2", "3"]
  assert rows[-1]["activation"] == "reciprocal(zero(x))"  # failed: ranked last
  assert rows[-1]["diverged"] == "True"
  assert {row["activation"] for row in rows[:2]} == {"relu(x)", "tanh(x)"}
  assert float(rows[0]["validation_accuracy"]) >= float(rows[1]["validation_accuracy"]) > 0.5
  with open(tmp_path / "results.json", encoding="utf-8") as f:
    results = json.load(f)
  assert len(results["members"]) == 3
  assert "reciprocal(zero(x))" in process.stdout and "rank" in process.stdout


@pytest.mark.slow
def test_bad_mode_and_missing_config_are_usage_errors(tmp_path):
  process = run_main("--config=configs/quickstart.py:smoke", "--config.mode=dance")
  assert process.returncode == 2 and "config.mode = 'dance' is not one of" in process.stderr
  process = run_main(f"--workdir={tmp_path}")
  assert process.returncode != 0 and "config" in process.stderr


@pytest.mark.slow
def test_features_mode_writes_output_and_fisher_features(tmp_path):
  process = run_main("--config=configs/quickstart.py:smoke", f"--workdir={tmp_path}",
                     "--config.mode=features", "--config.fisher.batch_size=16",
                     "--config.activations=('relu(x)','reciprocal(zero(x))')")
  assert process.returncode == 0, process.stderr[-3000:]
  saved = np.load(tmp_path / "features.npz")
  names = ["relu(x)", "reciprocal(zero(x))"]
  assert list(saved["names"]) == names
  assert saved["outputs"].shape == (2, 1000)
  # The output features: relu and 1/0 at METHOD.md's reference points, from float64 ...
  points = np.clip(np.random.RandomState(0).normal(size=1000), -5, 5)
  expected = np.stack([np.maximum(points, 0), np.full(1000, np.inf)]).astype(np.float32)
  assert saved["outputs"].dtype == np.float32
  np.testing.assert_array_equal(saved["outputs"], expected)
  # ... and what the library computes for the same config in this process.
  config = quickstart.get_config("smoke")
  config.mode = "features"
  config.fisher.batch_size = 16
  config.activations = tuple(names)
  np.testing.assert_array_equal(
      saved["outputs"], features.outputs(names, normalize=bool(config.population.normalize)))
  assert np.all(np.isfinite(saved["fisher"][0])) and np.all(np.isnan(saved["fisher"][1]))
  result = fisher.features(config, names)
  assert saved["fisher"].dtype == result.features.dtype
  np.testing.assert_array_equal(saved["fisher"], result.features)
  assert result.failed.keys() == {1}
  assert json.loads(str(saved["fisher_failed"])) == {names[1]: result.failed[1]}
