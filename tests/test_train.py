"""Population training: results, isolation of diverging members, determinism, resume, devices."""

import importlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from actbench.engine import data, train, trainer
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


def _guarded(method, level: str):
  def guarded(*args, **kwargs):
    with jax.transfer_guard_host_to_device(level):
      return method(*args, **kwargs)
  return guarded


@pytest.mark.slow
def test_population_learns_and_reports_every_member(digits, monkeypatch):
  # An epoch and an evaluation copy to the device only what the trainer puts there (the
  # batches of a compiled call, once per call): no other host array reaches a step.
  for name, level in (("train_epoch", "disallow"), ("evaluate", "disallow"),
                      ("put_shared", "allow"), ("put_members", "allow")):
    monkeypatch.setattr(trainer.PopulationTrainer, name,
                        _guarded(getattr(trainer.PopulationTrainer, name), level))
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


# Extended (CI time): a diverging member's isolation is also checked by
# test_member_diverging_midway_keeps_its_last_finite_metrics and test_population.py, and the
# strategies' agreement for Fisher features (test_fisher.py) and gradients (test_gradients.py).
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("strategies", [("map", "vmap"), ("map", "grouped")])
def test_diverging_member_is_isolated_and_the_strategies_agree(digits, strategies):
  # One program for all members. Under vmap (the accelerator path) every member evaluates
  # every operator of the population's tables (here those the names use: a whole space's
  # would only make the CPU compile slower), and still nothing leaks; grouped, in groups of 2
  # (sorted by their codes, the second padded), the same holds.
  healthy_names = ["relu(identity(x))", "sigmoid(identity(x))", "tanh(identity(x))"]
  healthy_by_strategy = {}
  for strategy in strategies:
    config = smoke_config()
    config.population.strategy = strategy
    config.population.group_size = 2
    healthy = train.train_population(config, healthy_names, [0], dataset=digits)
    with_bad = train.train_population(
        config, ["relu(identity(x))", "reciprocal(zero(x))", "tanh(identity(x))"], [0],
        dataset=digits)
    assert with_bad.diverged == [False, True, False], strategy
    assert np.isnan(with_bad.metrics["validation_accuracy"][1])
    for name, values in healthy.metrics.items():
      # The other members are exactly as if the diverging one had not been there.
      assert with_bad.metrics[name][0] == values[0], (strategy, name)
      assert with_bad.metrics[name][2] == values[2], (strategy, name)
    healthy_by_strategy[strategy] = healthy
  # The strategies compute the same members, fused differently.
  mapped = healthy_by_strategy["map"]
  for strategy in strategies[1:]:
    other = healthy_by_strategy[strategy]
    assert other.activations == mapped.activations and other.seeds == mapped.seeds
    for name in mapped.metrics:
      np.testing.assert_allclose(other.metrics[name], mapped.metrics[name], rtol=1e-3,
                                 atol=1e-3, err_msg=f"{strategy} {name}")


def test_member_diverging_midway_keeps_its_last_finite_metrics(digits):
  # square(x) with this learning rate trains through the first epoch and blows up in the
  # second: the member stops updating, is marked diverged and reports its last finite epoch.
  result = train.train_population(smoke_config(learning_rate=1.0), ["square(x)"], [0],
                                  dataset=digits)
  assert result.diverged == [True]
  first, second = result.history[0]["epochs"]
  assert np.isfinite(first["train_loss"][0]) and np.isnan(second["train_loss"][0])
  assert result.metrics["train_loss"] == first["train_loss"]
  assert result.metrics["train_accuracy"] == first["train_accuracy"]


@pytest.mark.slow
def test_bfloat16_where_the_config_asks(digits):
  config = smoke_config()
  config.model.dtype = "bfloat16"
  result = train.train_population(config, ["swish(x)"], [0], dataset=digits)
  assert result.diverged == [False]
  assert result.metrics["validation_accuracy"][0] > 0.5


def test_deterministic_under_a_fixed_seed(digits):
  first = train.train_population(smoke_config(), ["swish(x)"], [3], dataset=digits)
  second = train.train_population(smoke_config(), ["swish(x)"], [3], dataset=digits)
  assert first.metrics == second.metrics


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(digits, tmp_path, monkeypatch):
  config = smoke_config()
  config.train.num_epochs = 3
  names, seeds = ["relu(x)", "elu(x)"], [0]
  uninterrupted = train.train_population(config, names, seeds, dataset=digits)
  workdir = str(tmp_path)
  with pytest.raises(train.TrainingInterrupted):
    train.train_population(config, names, seeds, dataset=digits, workdir=workdir,
                           stop_after_epoch=1)
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  trained = []  # the epochs the resumed run trains
  train_epoch = trainer.PopulationTrainer.train_epoch
  monkeypatch.setattr(trainer.PopulationTrainer, "train_epoch",
                      lambda self, *args: trained.append(args[-1]) or train_epoch(self, *args))
  resumed = train.train_population(config, names, seeds, dataset=digits, workdir=workdir)
  assert trained == [1, 2]  # only the epochs after the checkpoint
  assert resumed.history[0]["resumed_from_epoch"] == 1
  assert uninterrupted.history[0]["resumed_from_epoch"] == 0
  assert resumed.metrics == uninterrupted.metrics
  assert resumed.history[0]["epochs"] == uninterrupted.history[0]["epochs"]
  # The learning curves too: the epochs before the checkpoint come back from it.
  assert resumed.curves == uninterrupted.curves
  assert len(resumed.curves["validation_accuracy"][0]) == 3
  assert [run[-1] for run in resumed.curves["validation_accuracy"]] == resumed.metrics[
      "validation_accuracy"]


@pytest.mark.slow
def test_cross_validation_trains_each_fold_as_its_own_dataset(digits, tmp_path):
  config = smoke_config()
  config.train.num_epochs = 1
  config.dataset.folds = 2
  names = ["relu(x)", "reciprocal(zero(x))"]  # the second diverges on every fold
  result = train.train_population(config, names, [0, 1], dataset=digits,
                                  workdir=str(tmp_path))
  assert result.activations == ["relu(x)"] * 4 + ["reciprocal(zero(x))"] * 4
  assert result.seeds == [0, 0, 1, 1] * 2 and result.folds == [0, 1] * 4
  # Reference: each fold trained on its own, without cross-validation.
  config.dataset.folds = 0
  for fold, fold_data in enumerate(data.cross_validation_folds(digits, 2, seed=config.seed)):
    alone = train.train_population(config, ["relu(x)"], [0, 1], dataset=fold_data)
    for name, values in alone.metrics.items():
      assert [result.metrics[name][i] for i in (fold, 2 + fold)] == values, name
  # One checkpoint directory per fold and population, all found for deletion.
  config.dataset.folds = 2
  directories = train.checkpoint_directories(config, names, [0, 1], str(tmp_path),
                                             dataset=digits)
  assert len(directories) == 2
  assert sorted(directories) == sorted(
      os.path.join(str(tmp_path), "checkpoints", d)
      for d in os.listdir(os.path.join(str(tmp_path), "checkpoints")))
  summary = result.by_activation()["relu(x)"]
  per_seed = [np.mean(result.metrics["validation_accuracy"][2 * s:2 * s + 2]) for s in (0, 1)]
  assert summary["validation_accuracy"] == pytest.approx(np.median(per_seed))
  assert summary["runs"] == 4 and summary["diverged_runs"] == 0
  assert result.by_activation()["reciprocal(zero(x))"]["diverged"]


def _one_activation(diverged, accuracy, rule):
  """A PopulationResult of one activation: two seeds x two folds."""
  return train.PopulationResult(
      ["f(x)"] * 4, [0, 0, 1, 1], {"validation_accuracy": accuracy,
                                   "validation_loss": [1.0, 2.0, 3.0, 4.0]},
      diverged, [1.0] * 4, folds=[0, 1, 0, 1], divergence=rule, num_classes=10)


def test_diverged_runs_fail_the_function_or_score_chance():
  accuracy = [0.9, 0.8, 0.7, np.nan]
  fail = _one_activation([False, False, False, True], accuracy, "fail").by_activation()["f(x)"]
  assert fail["diverged"] and fail["diverged_runs"] == 1
  # Seed means over folds (NaN-aware), then the median over seeds.
  assert fail["validation_accuracy"] == pytest.approx(np.median([0.85, 0.7]))
  chance = _one_activation([False, False, False, True], accuracy, "chance").by_activation()["f(x)"]
  assert not chance["diverged"] and chance["diverged_runs"] == 1
  # The diverged run scores chance accuracy (1/10) and no loss.
  assert chance["validation_accuracy"] == pytest.approx(np.median([0.85, (0.7 + 0.1) / 2]))
  assert chance["validation_loss"] == pytest.approx(np.median([1.5, 3.0]))
  every = _one_activation([True] * 4, [np.nan] * 4, "chance").by_activation()["f(x)"]
  assert every["diverged"] and every["diverged_runs"] == 4


def test_divergence_rule_is_checked(digits):
  config = smoke_config()
  config.train.divergence = "ignore"
  with pytest.raises(ValueError, match="config.train.divergence must be one of"):
    train.train_population(config, ["relu(x)"], [0], dataset=digits)


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
  config.dataset.download = False
  with pytest.raises(data.DatasetNotFoundError, match="python -m actbench.prepare cifar10"):
    train.train_population(config, ["relu(x)"], [0])


SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    if len(sys.argv) > 1:  # process i of n, on this host
      process, processes, port = map(int, sys.argv[1:])
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes,
                                 process_id=process)
    from actbench.engine import train
    from configs import quickstart
    result = train.train_population(quickstart.get_config("smoke"),
                                    ["relu(x)", "tanh(x)", "swish(x)"], [0, 1])
    print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                      "metrics": result.metrics, "diverged": result.diverged}))
""")


def _start(devices: int, *args) -> subprocess.Popen:
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, XLA_FLAGS=flags.strip(),
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-c", SHARDED, *map(str, args)], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device():
  return _result(_start(1))


def assert_same_results(result, reference):
  assert result["diverged"] == reference["diverged"]
  for name, values in reference["metrics"].items():
    np.testing.assert_allclose(result["metrics"][name], values, rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_population_sharded_over_four_devices_equals_one(one_device):
  four = _result(_start(4))
  assert four["devices"] == 4 and one_device["devices"] == 1
  assert_same_results(four, one_device)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_equal_one(one_device):
  with socket.socket() as probe:  # a free port for the coordinator
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  processes = [_start(1, i, 2, port) for i in range(2)]
  results = [_result(p) for p in processes]
  for result in results:
    assert result["processes"] == 2 and result["devices"] == 2
    assert_same_results(result, one_device)


@pytest.mark.parametrize("config_name", ["quickstart"])  # the others: test_configs.py
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
