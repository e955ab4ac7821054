"""Population training: results, isolation of diverging members, determinism, resume, devices."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from actbench import data, train
from configs import quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def smoke_config(**train_fields):
  config = quickstart.get_config("smoke")
  config.train.num_epochs = 2
  for name, value in train_fields.items():
    setattr(config.train, name, value)
  return config


def test_population_learns_and_reports_every_member(digits):
  result = train.train_population(smoke_config(), ["relu(x)", "tanh(x)"], [0, 1],
                                  dataset=digits)
  assert result.activations == ["relu(x)", "relu(x)", "tanh(x)", "tanh(x)"]
  assert result.seeds == [0, 1, 0, 1]
  assert result.diverged == [False] * 4
  for name in ("train", "validation", "test"):
    accuracy = np.array(result.metrics[f"{name}_accuracy"])
    assert np.all(accuracy > 0.5), (name, accuracy)  # 10 classes: chance is 0.1
    assert np.all(np.isfinite(result.metrics[f"{name}_loss"]))
  # Seeds differ in initialization, so their results differ.
  assert result.metrics["validation_loss"][0] != result.metrics["validation_loss"][1]
  summary = result.by_activation()
  assert summary["relu(x)"]["seeds"] == [0, 1]
  assert summary["relu(x)"]["validation_accuracy"] == pytest.approx(
      np.median(result.metrics["validation_accuracy"][:2]))
  assert len(result.history[0]["epochs"]) == 2
  json.dumps(result.to_json())  # serializable


def test_diverging_member_is_isolated(digits):
  # One schema, so the diverging member trains inside the same compiled program.
  config = smoke_config()
  config.population.schema = "unary(unary(x))"
  healthy = train.train_population(
      config, ["relu(identity(x))", "sigmoid(identity(x))", "tanh(identity(x))"], [0],
      dataset=digits)
  with_bad = train.train_population(
      config, ["relu(identity(x))", "reciprocal(zero(x))", "tanh(identity(x))"], [0],
      dataset=digits)
  assert with_bad.diverged == [False, True, False]
  assert np.isnan(with_bad.metrics["validation_accuracy"][1])
  for name, values in healthy.metrics.items():
    # The other members are exactly as if the diverging one had not been there.
    assert with_bad.metrics[name][0] == values[0], name
    assert with_bad.metrics[name][2] == values[2], name


def test_member_diverging_midway_keeps_its_last_finite_state(digits):
  # A huge learning rate makes every member blow up after a few steps; each keeps its last
  # finite parameters, so its evaluation is still finite, and it is marked diverged.
  result = train.train_population(smoke_config(learning_rate=1e6), ["relu(x)"], [0],
                                  dataset=digits)
  assert result.diverged == [True]
  assert np.isfinite(result.metrics["validation_loss"][0]) or np.isnan(
      result.metrics["validation_accuracy"][0])


def test_deterministic_under_a_fixed_seed(digits):
  first = train.train_population(smoke_config(), ["swish(x)"], [3], dataset=digits)
  second = train.train_population(smoke_config(), ["swish(x)"], [3], dataset=digits)
  assert first.metrics == second.metrics


def test_map_and_vmap_agree(digits):
  config = smoke_config()
  config.population.strategy = "map"
  mapped = train.train_population(config, ["max(relu(x),tanh(x))", "mul(x,sigmoid(x))"], [0],
                                  dataset=digits)
  config.population.strategy = "vmap"
  vmapped = train.train_population(config, ["max(relu(x),tanh(x))", "mul(x,sigmoid(x))"], [0],
                                   dataset=digits)
  for name in mapped.metrics:
    np.testing.assert_allclose(vmapped.metrics[name], mapped.metrics[name], rtol=1e-3,
                               atol=1e-3, err_msg=name)


def test_resume_equals_uninterrupted_run(digits, tmp_path):
  config = smoke_config()
  config.train.num_epochs = 3
  names, seeds = ["relu(x)", "elu(x)"], [0]
  uninterrupted = train.train_population(config, names, seeds, dataset=digits)
  workdir = str(tmp_path)
  with pytest.raises(train.TrainingInterrupted):
    train.train_population(config, names, seeds, dataset=digits, workdir=workdir,
                           stop_after_epoch=1)
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  resumed = train.train_population(config, names, seeds, dataset=digits, workdir=workdir)
  assert resumed.metrics == uninterrupted.metrics
  assert resumed.history[0]["epochs"] == uninterrupted.history[0]["epochs"]


def test_bad_input_is_rejected(digits):
  with pytest.raises(TypeError, match="list of names"):
    train.train_population(smoke_config(), "relu(x)", [0], dataset=digits)
  config = smoke_config()
  config.population.strategy = "pmap"
  with pytest.raises(ValueError, match="strategy"):
    train.train_population(config, ["relu(x)"], [0], dataset=digits)
  with pytest.raises(ValueError, match="batch_size"):
    train.train_population(smoke_config(batch_size=5000), ["relu(x)"], [0], dataset=digits)


def test_missing_dataset_names_the_fix(tmp_path):
  config = smoke_config()
  config.dataset.name = "cifar10"
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10"):
    train.train_population(config, ["relu(x)"], [0])


SHARDED = textwrap.dedent("""
    import json, os, sys
    import jax
    from actbench import train
    from configs import quickstart
    config = quickstart.get_config("smoke")
    result = train.train_population(config, ["relu(x)", "tanh(x)", "swish(x)"], [0, 1])
    print(json.dumps({"devices": jax.device_count(), "metrics": result.metrics,
                      "diverged": result.diverged}))
""")


def _run_with_devices(count: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  output = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def test_population_sharded_over_four_devices_equals_one():
  four = _run_with_devices(4)
  one = _run_with_devices(1)
  assert four["devices"] == 4 and one["devices"] == 1
  assert four["diverged"] == one["diverged"]
  for name, values in one["metrics"].items():
    np.testing.assert_allclose(four["metrics"][name], values, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("config_name", ["quickstart", "cnn", "resnet"])
def test_every_config_trains_its_smoke_variant(config_name, tfds_dir):
  module = importlib.import_module(f"configs.{config_name}")
  full = module.get_config()
  assert full.train.num_epochs >= 10 and full.seed == 0
  config = module.get_config("smoke")
  if config.dataset.name != "digits":
    config.dataset.data_dir = tfds_dir  # tiny prepared CIFAR-10
  result = train.train_population(config, ["relu(x)", "tanh(x)"], [0])
  assert result.diverged == [False, False]
  for name in ("train_loss", "validation_loss", "test_loss", "test_accuracy"):
    assert np.all(np.isfinite(result.metrics[name])), name
  with pytest.raises(ValueError, match="unknown config argument"):
    module.get_config("bogus")
