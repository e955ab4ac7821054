"""Learning curves and successive halving: the engine (train.train_population) and its rules."""

import math

import numpy as np
import pytest

from actbench import config_fields
from actbench.engine import data, halving, train, trainer
from actbench.search import loop
from configs import quickstart

NAMES = ["relu(x)", "tanh(x)", "swish(x)", "elu(x)", "sigmoid(x)", "softsign(x)"]
FIDELITY = halving.Fidelity(rungs=(1, 2, 3), eta=2)  # 6 functions -> 3 -> 1


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def smoke_config(num_epochs=3):
  config = quickstart.get_config("smoke")
  config.train.num_epochs = num_epochs
  return config


def reference_survivors(scores, eta):
  """The functions that go on from a rung, by brute force: each keeps its place when fewer
  than count // eta (at least 1) others beat it, a NaN (failed) beaten by every number, ties
  going to the earlier function."""
  count = len(scores)
  keep = max(1, count // eta)
  kept = []
  for i, score in enumerate(scores):
    beaten_by = 0
    for j, other in enumerate(scores):
      if j == i:
        continue
      if math.isnan(score) and not math.isnan(other):
        beaten_by += 1
      elif not math.isnan(score) and not math.isnan(other) and (
          other > score or (other == score and j < i)):
        beaten_by += 1
      elif math.isnan(score) and math.isnan(other) and j < i:
        beaten_by += 1
    if beaten_by < keep:
      kept.append(i)
  return kept


def test_survivors_match_a_brute_force_reference():
  rng = np.random.default_rng(0)
  fidelity = halving.Fidelity((2, 5, 10), eta=3)
  for trial in range(200):
    count = int(rng.integers(1, 30))
    scores = rng.choice([0.1, 0.5, 0.9, math.nan, *rng.random(3)], size=count).tolist()
    got = fidelity.survivors(scores)
    assert sorted(got) == reference_survivors(scores, 3), (trial, scores)
    # Best first: the order the survivors carry on in.
    ranked = [-math.inf if math.isnan(scores[i]) else scores[i] for i in got]
    assert ranked == sorted(ranked, reverse=True)


def test_schedule_and_epochs_by_hand():
  fidelity = halving.Fidelity((2, 5, 10), eta=3)
  assert fidelity.schedule(27) == [27, 9, 3]
  assert fidelity.epochs(27) == 27 * 2 + 9 * 3 + 3 * 5
  assert fidelity.schedule(5) == [5, 1, 1]
  assert fidelity.epochs(5) == 5 * 2 + 1 * 3 + 1 * 5
  assert fidelity.keep(0) == 0


@pytest.mark.parametrize("rungs, eta, message", [
    ((2, 5, 8), 3, "config.search.fidelity.rungs must end at config.train.num_epochs (10), "
                   "got [2, 5, 8]"),
    ((5, 2, 10), 3, "config.search.fidelity.rungs must be increasing positive epochs, got "
                    "[5, 2, 10]"),
    ((2, 10), 1, "config.search.fidelity.eta must be at least 2, got 1"),
])
def test_a_bad_fidelity_is_one_line(rungs, eta, message):
  config = quickstart.get_config()
  config.train.num_epochs = 10
  config.search.fidelity.rungs = rungs
  config.search.fidelity.eta = eta
  assert config_fields.problems(config) == [message]


def test_halving_in_a_benchmark_is_refused():
  config = quickstart.get_config()
  config.mode = "benchmark"
  config.search.fidelity.rungs = (1, int(config.train.num_epochs))
  (problem,) = config_fields.problems(config)
  assert problem.startswith("config.search.fidelity.rungs is set: a benchmark table holds")


def _summary_score(result, name, epoch):
  """An independent reading of what halving ranks by: the median over seeds of the validation
  accuracy after `epoch`, NaN when any run had failed by then (divergence rule 'fail')."""
  runs = [i for i, a in enumerate(result.activations) if a == name]
  if any(result.curve_failed[i][epoch - 1] for i in runs):
    return math.nan
  return float(np.median([result.curves["validation_accuracy"][i][epoch - 1] for i in runs]))


@pytest.fixture(scope="module")
def halved(digits):
  return train.train_population(smoke_config(), NAMES, [0, 1], dataset=digits,
                                fidelity=FIDELITY)


@pytest.mark.slow
def test_the_survivors_of_each_rung_are_those_the_curves_rank_best(halved):
  summary = halved.by_activation()
  expected_epochs = {}
  alive = list(NAMES)
  for rung, until in enumerate(FIDELITY.rungs):
    for name in alive:
      expected_epochs[name] = until
    if rung + 1 < len(FIDELITY.rungs):
      scores = [_summary_score(halved, name, until) for name in alive]
      alive = [alive[i] for i in reference_survivors(scores, FIDELITY.eta)]
  assert {name: summary[name]["epochs"] for name in NAMES} == expected_epochs
  assert sorted(expected_epochs.values()) == [1, 1, 1, 2, 2, 3]
  for name in NAMES:
    epochs = expected_epochs[name]
    assert summary[name]["stopped"] == (epochs < 3)
    curve = summary[name]["validation_accuracy_curve"]
    assert len(curve) == epochs
    # The final figure is the last point of the curve, for survivors and stopped alike.
    assert curve[-1] == summary[name]["validation_accuracy"]
    assert math.isnan(summary[name]["test_accuracy"]) == (epochs < 3)


@pytest.mark.slow
def test_a_survivor_trains_exactly_as_alone(halved, digits):
  (survivor,) = [name for name, s in halved.by_activation().items() if not s["stopped"]]
  alone = train.train_population(smoke_config(), [survivor], [0, 1], dataset=digits)
  runs = [i for i, a in enumerate(halved.activations) if a == survivor]
  for name, values in alone.metrics.items():
    assert [halved.metrics[name][i] for i in runs] == values, name
  for name, runs_curves in alone.curves.items():
    assert [halved.curves[name][i] for i in runs] == runs_curves, name


@pytest.mark.slow
def test_a_kill_between_rungs_resumes_without_retraining_a_finished_rung(halved, digits,
                                                                         tmp_path, monkeypatch):
  workdir = str(tmp_path)
  with pytest.raises(train.TrainingInterrupted):  # preempted once rung 1 is checkpointed
    train.train_population(smoke_config(), NAMES, [0, 1], dataset=digits, workdir=workdir,
                           fidelity=FIDELITY, stop_after_epoch=1)
  trained = []  # (members, epoch) of every epoch the resumed run trains
  train_epoch = trainer.PopulationTrainer.train_epoch

  def spy(self, state, codes, seeds, epoch):
    trained.append((int(codes.shape[0]), epoch))
    return train_epoch(self, state, codes, seeds, epoch)

  monkeypatch.setattr(trainer.PopulationTrainer, "train_epoch", spy)
  resumed = train.train_population(smoke_config(), NAMES, [0, 1], dataset=digits,
                                   workdir=workdir, fidelity=FIDELITY)
  assert trained == [(6, 1), (2, 2)]  # 3 functions x 2 seeds from epoch 1; 1 x 2 from 2
  assert resumed.metrics == halved.metrics
  assert resumed.curves == halved.curves and resumed.epochs == halved.epochs


@pytest.mark.slow
def test_curves_end_at_the_final_figures_and_reach_the_store(digits):
  config = smoke_config(num_epochs=2)
  config.train.learning_rate = 1.0  # square(x) trains one epoch, then diverges
  result = train.train_population(config, ["square(x)", "relu(x)"], [0], dataset=digits)
  evaluations = loop.evaluations_from(result, [4, 7], ["square(x)", "relu(x)"], "w")
  diverging, healthy = evaluations
  assert diverging.status == "failed" and healthy.status == "ok"
  assert healthy.curve("failed") == [0.0, 0.0] and diverging.curve("failed")[-1] == 1.0
  # A run counts as failed after an epoch whose validation loss is not finite (one seed, no
  # folds: the class's flags are its run's).
  for epoch, loss in enumerate(result.curves["validation_loss"][0]):
    if not math.isfinite(loss):
      assert diverging.curve("failed")[epoch] == 1.0
  for evaluation, run in zip(evaluations, range(2)):
    curve = evaluation.curve("validation_accuracy")
    # One seed, no folds: the class's curve is its run's (NaN where the loss was not finite).
    np.testing.assert_array_equal(curve, result.curves["validation_accuracy"][run])
    np.testing.assert_array_equal(curve[-1], evaluation.metrics["validation_accuracy"])
    assert evaluation.metrics["epochs"] == 2.0
    np.testing.assert_array_equal(evaluation.curve("validation_loss")[-1],
                                  evaluation.metrics["validation_loss"])
  # The healthy member's curve is its evaluations after each epoch: the last is what a
  # separate evaluation of the trained state gives, and the first differs from it.
  assert healthy.curve()[0] != healthy.curve()[1]


@pytest.mark.slow
def test_a_checkpoint_from_before_curves_resumes(digits, tmp_path, monkeypatch):
  config = smoke_config(num_epochs=3)
  names = ["relu(x)", "elu(x)"]
  uninterrupted = train.train_population(config, names, [0], dataset=digits)
  workdir = str(tmp_path)
  with monkeypatch.context() as patch:  # as an older actbench checkpointed: train metrics only
    patch.setattr(train, "_history_keys", lambda dataset: ("train_loss", "train_accuracy"))
    with pytest.raises(train.TrainingInterrupted):
      train.train_population(config, names, [0], dataset=digits, workdir=workdir,
                             stop_after_epoch=2)
  resumed = train.train_population(config, names, [0], dataset=digits, workdir=workdir)
  assert resumed.history[0]["resumed_from_epoch"] == 2
  assert resumed.metrics == uninterrupted.metrics
  # Epoch 1 was never evaluated; epoch 2's state was checkpointed and is evaluated on resume;
  # epoch 3 trains as before.
  for got, expected in zip(resumed.curves["validation_accuracy"],
                           uninterrupted.curves["validation_accuracy"]):
    assert math.isnan(got[0]) and got[1:] == expected[1:]


@pytest.mark.slow
def test_halving_over_folds_ranks_by_the_mean_over_folds(digits):
  config = smoke_config(num_epochs=2)
  config.dataset.folds = 2
  names = NAMES[:4]
  result = train.train_population(config, names, [0], dataset=digits,
                                  fidelity=halving.Fidelity((1, 2), eta=2))
  assert sorted(set(result.folds)) == [0, 1]
  scores = []
  for name in names:  # one seed: the mean of its two folds after epoch 1
    runs = [i for i, a in enumerate(result.activations) if a == name]
    failed = any(result.curve_failed[i][0] for i in runs)
    scores.append(math.nan if failed else float(np.mean(
        [result.curves["validation_accuracy"][i][0] for i in runs])))
  going_on = {names[i] for i in reference_survivors(scores, 2)}
  summary = result.by_activation()
  assert {name for name in names if not summary[name]["stopped"]} == going_on
  for i, name in enumerate(result.activations):
    assert result.epochs[i] == (2 if name in going_on else 1)


@pytest.mark.parametrize("mode", ["train", "features", "search", "benchmark", "replay",
                                  "report", "recover"])
def test_no_fidelity_is_no_problem_in_any_mode(mode):
  config = quickstart.get_config()
  config.mode = mode
  assert config_fields.problems(config) == []
