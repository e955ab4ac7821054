"""Replays by training epochs, with and without successive halving: the epochs, the survivors
and the strategy's view against hand computations and brute-force references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from actbench.engine import halving
from actbench.expr import space
from actbench.search import cost_replay
from actbench.search import strategies as strategies_lib
from actbench.search.strategies import Candidates
from actbench.tables.table import Table
from bench import halving_replay

NAN = math.nan
# 12 functions x 4 epochs: validation accuracy after each epoch (NaN once failed); the last
# column is the final accuracy.
CURVES = np.array([
    [.50, .60, .70, .80],  # 0
    [.60, .70, .75, .85],  # 1  tied with 3 at epoch 1 and at epoch 2: ahead by position
    [NAN, NAN, NAN, NAN],  # 2  fails at once
    [.60, .70, .90, .95],  # 3  a late bloomer, stopped at epoch 2 by the tie with 1
    [.40, .50, .60, .97],  # 4  stopped at epoch 1
    [.50, .55, .60, .62],  # 5
    [.55, .75, .80, .90],  # 6  tied with 7 at epoch 2, proposed before it: goes on
    [.70, .75, .78, .80],  # 7
    [.30, .40, .50, .99],  # 8  the best, stopped at epoch 1
    [NAN, NAN, NAN, NAN],  # 9
    [.80, .85, .90, .96],  # 10
    [.20, NAN, NAN, NAN],  # 11 fails at epoch 2
])
ACCURACY = CURVES[:, -1]
# Rungs after epochs 1, 2 and 4, half going on: a round of 5 trains 5 x 1 + 2 x 1 + 1 x 2 = 9
# epochs, a round of 2 trains 2 + 1 + 2 = 5 and a round of 1 trains 1 + 1 + 2 = 4.
FIDELITY = halving.Fidelity((1, 2, 4), eta=2)
# Finite accuracies sorted: .62 .80 .80 .85 .90 .95 .96 .97 .99; the 99th percentile is
# .97 + 0.92 x .02 = .9884: only class 8 is in the top 1%. Within TIE of the best (.94 and
# above): classes 3, 4, 8 and 10.
TIE = 0.05


class Script:
  """Classes in a fixed order from `start`, wrapping around; records what it is shown."""

  def __init__(self, start: int = 0, n: int = 12):
    self.order = [(start + i) % n for i in range(n)]
    self.calls = []

  def propose(self, history, k, *, exclude=()):
    self.calls.append((dict(history), tuple(exclude), k))
    return [i for i in self.order if i not in history and i not in exclude][:k]


@pytest.fixture(scope="module")
def table():
  return Candidates([[f"f{i}"] for i in range(12)], np.zeros((12, 3), np.float32), None,
                    baselines=())


def _replay(table, variant, *, seeds=(0,), scripts=None, **kwargs):
  def factory(seed):
    script = Script(seed)
    if scripts is not None:
      scripts.append(script)
    return script
  kwargs.setdefault("epoch_budget", 100)
  return cost_replay.replay_by_cost(table, ACCURACY, CURVES, [variant], seeds=seeds,
                                    tie=TIE, factories={"script": factory}, **kwargs)


def test_rounds_of_halving_by_hand():
  rounds = cost_replay.run_one(Script(), ACCURACY, CURVES, epoch_budget=100, batch=5,
                               fidelity=FIDELITY)
  R = cost_replay.Round
  assert rounds == [
      # Epoch 1: .5 .6 NaN .6 .4 -> 1 and 3 (tied, by position); epoch 2: .70 .70 -> 1.
      # Class 2 had failed by its rung: recorded as failed, not stopped.
      R((0, 1, 2, 3, 4), (1,), (0, 3, 4), 9, (2,)),
      # Epoch 1: .5 .55 .7 .3 NaN -> 7 and 6; epoch 2: .75 .75 -> 6, proposed first.
      R((5, 6, 7, 8, 9), (6,), (5, 7, 8), 9, (9,)),
      # Two classes left: epoch 1: .8 .2 -> 10; it trains on alone.
      R((10, 11), (10,), (11,), 5),
  ]


def test_halving_epochs_found_at_and_the_strategys_view(table):
  scripts = []
  variant = cost_replay.Variant("script", 5, FIDELITY)
  assert variant.name == "script+halving"
  result = _replay(table, variant, scripts=scripts, grid=[4, 9, 17, 18, 22, 23, 100])
  run = result["script+halving"]
  # Class 10 (.96, tied) trains fully in the third round: 9 + 9 + 5 epochs.
  assert run.epochs_to_best.tolist() == [23.0]
  assert np.isnan(run.epochs_to_top1).all()  # class 8 was stopped at epoch 1
  assert run.evaluations.tolist() == [3] and run.stopped.tolist() == [7]
  assert run.epochs_spent.tolist() == [23] and run.final_tied.tolist() == [True]
  # Best full-training accuracy once each grid point's epochs are spent.
  np.testing.assert_array_equal(run.best_so_far[0],
                                [-np.inf, .85, .85, .90, .90, .96, .96])
  # The strategy sees full trainings and failures (NaN) only; stopped classes are excluded,
  # never in its history.
  calls = [({i: "failed" if math.isnan(v) else v for i, v in history.items()}, exclude, k)
           for history, exclude, k in scripts[0].calls]
  assert calls == [({}, (), 5), ({1: .85, 2: "failed"}, (0, 3, 4), 5),
                   ({1: .85, 2: "failed", 6: .90, 9: "failed"}, (0, 3, 4, 5, 7, 8), 5)]
  assert result.best_accuracy == .99 and result.top1_threshold == pytest.approx(.9884)


def test_without_halving_by_hand(table):
  one = _replay(table, cost_replay.Variant("script"))["script"]
  assert one.epochs_to_best.tolist() == [16.0]  # class 3 is the 4th: 4 x 4 epochs
  assert np.isnan(one.epochs_to_top1).all()  # the replay stopped at class 3
  assert one.evaluations.tolist() == [4] and one.stopped.tolist() == [0]
  full = _replay(table, cost_replay.Variant("script"), stop_at_best=False)["script"]
  assert full.epochs_to_best.tolist() == [16.0] and full.epochs_to_top1.tolist() == [36.0]
  assert full.evaluations.tolist() == [12] and full.epochs_spent.tolist() == [48]
  # Rounds of 5: class 3 is found when its round ends, after 5 x 4 epochs.
  five = _replay(table, cost_replay.Variant("script", 5), stop_at_best=False)
  assert list(five.runs) == ["script@5"]
  run = five["script@5"]
  assert run.epochs_to_best.tolist() == [20.0] and run.epochs_to_top1.tolist() == [40.0]


def test_the_last_round_is_cut_to_the_budget(table):
  # Without halving, rounds of 5 under 30 epochs: 20, then 2 functions (8 epochs), then none.
  scripts = []
  run = _replay(table, cost_replay.Variant("script", 5), epoch_budget=30, stop_at_best=False,
                scripts=scripts)["script@5"]
  assert run.epochs_spent.tolist() == [28] and run.evaluations.tolist() == [7]
  assert [k for _, _, k in scripts[0].calls] == [5, 2]
  # With halving under 22 epochs: 9 + 9, then 4 left pay for a round of one (4 epochs):
  # class 10 alone, found at 22; class 11 is never proposed.
  scripts = []
  run = _replay(table, cost_replay.Variant("script", 5, FIDELITY), epoch_budget=22,
                scripts=scripts)["script+halving"]
  assert run.epochs_to_best.tolist() == [22.0] and run.epochs_spent.tolist() == [22]
  assert scripts[0].calls[-1][2] == 1 and run.stopped.tolist() == [6]
  # Under 21, 3 epochs pay for nothing: not reached.
  run = _replay(table, cost_replay.Variant("script", 5, FIDELITY),
                epoch_budget=21)["script+halving"]
  assert np.isnan(run.epochs_to_best).all() and run.epochs_spent.tolist() == [18]
  assert run.final_tied.tolist() == [False]
  assert run.best_so_far[0, -1] == .90


def reference_halving(proposed, curves, rungs, eta):
  """Brute force: at each rung but the last, a function goes on when fewer than
  max(1, count // eta) of those training beat it (a higher accuracy after the rung's epoch,
  NaN below every number, or an equal one proposed earlier). Returns (those trained fully,
  those stopped with no accuracy at their rung, epochs)."""
  active, epochs, previous, failed = list(proposed), 0, 0, []
  for number, epoch in enumerate(rungs):
    epochs += len(active) * (epoch - previous)
    previous = epoch
    if number + 1 == len(rungs):
      break
    keep = max(1, len(active) // eta)

    def score(i, epoch=epoch):
      value = curves[i, epoch - 1]
      return -math.inf if math.isnan(value) else value
    beaten = {i: sum(1 for q, j in enumerate(active)
                     if score(j) > score(i) or (score(j) == score(i) and q < p))
              for p, i in enumerate(active)}
    failed += [i for i in active if beaten[i] >= keep and math.isnan(curves[i, epoch - 1])]
    active = [i for i in active if beaten[i] < keep]
  return active, failed, epochs


def test_survivors_against_brute_force():
  rng = np.random.default_rng(0)
  levels = np.array([.1, .2, .3, .4, NAN])  # few values: many ties, NaN among them
  for _ in range(300):
    n, epochs = int(rng.integers(1, 31)), int(rng.integers(2, 9))
    rungs = tuple(sorted(rng.choice(np.arange(1, epochs), int(rng.integers(0, min(
        3, epochs - 1)) + 1), replace=False).tolist())) + (epochs,)
    fidelity = halving.Fidelity(rungs, int(rng.integers(2, 5)))
    curves = rng.choice(levels, size=(40, epochs))
    proposed = rng.permutation(40)[:n].tolist()
    evaluated, stopped, failed, cost = cost_replay.halve(proposed, curves, fidelity)
    survivors, failures, expected = reference_halving(proposed, curves, rungs, fidelity.eta)
    assert evaluated == [i for i in proposed if i in survivors]
    assert failed == [i for i in proposed if i in failures]
    assert stopped == [i for i in proposed if i not in survivors and i not in failures]
    assert cost == expected == fidelity.epochs(n)


def test_stopped_classes_are_refused_again(table):
  class Stubborn:
    def propose(self, history, k, *, exclude=()):
      return [0, 1, 2, 3, 4] if not history else [0]

  with pytest.raises(RuntimeError, match="class 0 twice"):
    cost_replay.replay_by_cost(table, ACCURACY, CURVES, [cost_replay.Variant(
        "stubborn", 5, FIDELITY)], seeds=[0], epoch_budget=100,
        factories={"stubborn": lambda seed: Stubborn()})


def test_rejects_bad_settings(table):
  variant = cost_replay.Variant("script", 5, FIDELITY)
  factories = {"script": lambda seed: Script(seed)}
  with pytest.raises(ValueError, match="curves"):
    cost_replay.replay_by_cost(table, ACCURACY, CURVES[:5], [variant], factories=factories)
  with pytest.raises(ValueError, match="last epoch"):
    cost_replay.replay_by_cost(table, ACCURACY + 0.01, CURVES, [variant], factories=factories)
  with pytest.raises(ValueError, match="last rung"):
    cost_replay.replay_by_cost(table, ACCURACY, CURVES, [cost_replay.Variant(
        "script", 5, halving.Fidelity((1, 3)))], factories=factories)
  with pytest.raises(ValueError, match="names must differ"):
    cost_replay.replay_by_cost(table, ACCURACY, CURVES, [variant, variant], factories=factories)
  with pytest.raises(ValueError, match="pays for no full training"):
    cost_replay.replay_by_cost(table, ACCURACY, CURVES, [variant], epoch_budget=3,
                               factories=factories)


def test_summary_and_json(table):
  variants = [cost_replay.Variant("script"), cost_replay.Variant("script", 5, FIDELITY)]
  result = cost_replay.replay_by_cost(table, ACCURACY, CURVES, variants, seeds=range(4),
                                      epoch_budget=30, tie=TIE,
                                      factories={"script": lambda seed: Script(seed)})
  one = result["script"]
  # One at a time from `seed`: the first of 3, 4, 8, 10 is 3 (4th), 3 (3rd), 3 (2nd), 3 (1st).
  assert one.epochs_to_best.tolist() == [16, 12, 8, 4]
  summary = result.summary()
  assert summary["script"]["epochs_to_best"] == {"q25": 7.0, "median": 10.0, "q75": 13.0,
                                                 "reached": 1.0}
  assert summary["script"]["tied_at_budget"] == 1.0
  document = json.loads(json.dumps(result.to_json(), allow_nan=False))
  assert document["variants"]["script+halving"] == {"strategy": "script", "batch": 5,
                                                    "rungs": [1, 2, 4], "eta": 2}
  assert document["epoch_budget"] == 30 and document["num_epochs"] == 4
  assert len(document["runs"]["script"]["best_so_far"][0]) == len(document["grid"])
  halved = document["summary"]["script+halving"]
  assert halved["tied_at_budget"] == pytest.approx(
      np.mean(result["script+halving"].final_tied))
  assert halved["tied_at_budget"] == halved["epochs_to_best"]["reached"]


def test_make_variants():
  variants = cost_replay.make_variants(("random", "evolution"), batches=(1, 27),
                                       fidelity=halving.Fidelity((2, 5, 10), 3))
  assert [(v.name, v.batch) for v in variants] == [
      ("random", 1), ("random@27", 27), ("random+halving", 27),
      ("evolution", 1), ("evolution@27", 27), ("evolution+halving", 27)]


def test_random_search_budget_against_permutations():
  accuracies = np.array([.5, .9, NAN, .91, .3, .7])  # within .02 of the best: 1 and 3
  for share in (.5, .9, 1.0):
    firsts = [1 + min(order.index(1), order.index(3))
              for order in map(list, itertools.permutations(range(6)))]
    m = min(m for m in range(1, 7) if np.mean(np.array(firsts) <= m) >= share - 1e-12)
    assert cost_replay.random_search_budget(accuracies, 10, tie=.02, share=share) == 10 * m


def test_curve_rank_correlation_against_scipy():
  rng = np.random.default_rng(1)
  final = rng.random(50)
  curves = final[:, None] * np.linspace(.5, 1, 6) + rng.normal(scale=.1, size=(50, 6))
  curves[:, -1] = final
  curves[rng.random((50, 6)) < .1] = NAN  # failures, at some epochs
  final = curves[:, -1].copy()
  result = cost_replay.curve_rank_correlation(curves, final)
  assert len(result) == 6 and result[-1] == pytest.approx(1.0)
  for k in range(6):
    both = np.isfinite(curves[:, k]) & np.isfinite(final)
    assert result[k] == pytest.approx(stats.spearmanr(curves[both, k], final[both]).statistic)
    # Pearson correlation of the ranks (no ties in random floats).
    ranks = [np.argsort(np.argsort(v)) for v in (curves[both, k], final[both])]
    assert result[k] == pytest.approx(np.corrcoef(*ranks)[0, 1])
  assert math.isnan(cost_replay.curve_rank_correlation(np.full((5, 2), .5), np.arange(5.))[0])
  # Among the best 10% of the functions with a final accuracy: the 5 highest of the 46.
  among_best = cost_replay.curve_rank_correlation(curves, final, best=.1)
  finite = np.flatnonzero(np.isfinite(final))
  top = finite[np.argsort(final[finite])[::-1][:math.ceil(.1 * len(finite))]]
  for k in range(6):
    keep = top[np.isfinite(curves[top, k])]
    assert among_best[k] == pytest.approx(stats.spearmanr(curves[keep, k], final[keep]).statistic)


def _real_space():
  """A small real space (the test_replay one) with learning curves: accuracy rises toward
  the final one; failed functions are NaN throughout, a few fail midway."""
  schema = "binary(unary(x),unary(x))"
  unary = ("zero", "identity", "relu", "tanh", "elu", "sigmoid", "swish", "exp", "abs",
           "softsign", "erf", "square")
  candidates = Candidates.from_names(space.enumerate(schema, unary=unary,
                                                     binary=("add", "mul", "max")),
                                     schema=schema)
  rng = np.random.default_rng(0)
  finite = np.isfinite(candidates.outputs).all(axis=1)
  values = np.tanh(np.where(finite[:, None], candidates.outputs, 0))
  accuracy = np.where(finite, 1 - np.abs(values - np.tanh(2 * np.clip(values, 0, 9))).mean(1),
                      np.nan)
  n = len(candidates)
  curves = accuracy[:, None] * (1 - np.exp(-np.arange(1, 11) / rng.uniform(1, 4, (n, 1))))
  curves += rng.normal(scale=.02, size=curves.shape)
  midway = rng.random(n) < .05
  curves[midway, rng.integers(1, 10):] = np.nan
  accuracy[midway] = np.nan
  curves[:, -1] = accuracy
  choices = space.operator_choices(schema, unary, ("add", "mul", "max"))
  return candidates, accuracy, curves, choices


class Recorder:
  """A strategy whose calls are checked: no stopped class ever in its history."""

  def __init__(self, strategy, log):
    self.strategy, self.log = strategy, log

  def propose(self, history, k, *, exclude=()):
    self.log.append((set(history), set(exclude)))
    return self.strategy.propose(history, k, exclude=exclude)


def test_real_strategies_are_deterministic_per_seed():
  candidates, accuracy, curves, choices = _real_space()
  embedding = np.random.default_rng(3).random((len(candidates), 2))
  options = {"evolution": {"population_size": 9, "sample_size": 3, "choices": choices}}
  fidelity = halving.Fidelity((2, 5, 10), 3)
  variants = cost_replay.make_variants(("aquasurf", "random", "evolution"), batches=(1, 9),
                                       fidelity=fidelity)
  # A round of 9 under halving trains 9 x 2 + 3 x 3 + 1 x 5 = 32 epochs: 7 rounds.
  kwargs = dict(seeds=range(3), epoch_budget=7 * 32, embedding=embedding, tie=0.002,
                strategy_options=options, stop_at_best=False)
  first = cost_replay.replay_by_cost(candidates, accuracy, curves, variants, **kwargs)
  again = cost_replay.replay_by_cost(candidates, accuracy, curves, variants, **kwargs)
  assert len(first.runs) == 9
  for name, run in first.runs.items():
    for field, values in vars(run).items():
      np.testing.assert_array_equal(values, getattr(again[name], field), err_msg=name + field)
    assert (run.epochs_spent <= 7 * 32).all()
    np.testing.assert_array_equal(np.maximum.accumulate(run.best_so_far, axis=1),
                                  run.best_so_far)  # never falls
    if first.variants[name].fidelity is None:
      assert (run.stopped == 0).all() and (run.epochs_spent == 10 * run.evaluations).all()
    else:
      assert fidelity.epochs(9) == 32 and (run.epochs_spent == 7 * 32).all()
      assert (run.evaluations == 7).all() and (run.stopped == 7 * 8).all()
  random_rows = first["random"].best_so_far
  assert not (random_rows[0] == random_rows[1]).all()  # seeds differ

  # Evolution under halving, watched: stopped classes never reach its history.
  log = []
  def factory(seed):
    return Recorder(strategies_lib.make_strategy("evolution", candidates, seed=seed,
                                                 **options["evolution"]), log)
  watched = cost_replay.replay_by_cost(
      candidates, accuracy, curves, [cost_replay.Variant("evolution", 9, fidelity)],
      factories={"evolution": factory}, **kwargs)
  np.testing.assert_array_equal(watched["evolution+halving"].best_so_far,
                                first["evolution+halving"].best_so_far)
  assert len(log) == 3 * 7
  for history, exclude in log:
    assert not history & exclude
  assert max(len(exclude) for _, exclude in log) == 6 * 8


def test_cost_curves_plot(tmp_path):
  from actbench.report import plots
  curves = {"random": np.array([[-np.inf, .5, .6], [.2, .2, .7]]),
            "random+halving": np.array([[.6, .8, .8]])}
  path = plots.cost_curves(curves, [10, 20, 30], str(tmp_path / "cost.png"), reference=.9)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _bench_table():
  candidates, accuracy, curves, _ = _real_space()
  names = [c[0] for c in candidates.classes]
  fisher = np.random.default_rng(0).random((len(names), 4)).astype(np.float32)
  table = Table(names, candidates.classes, {"Validation Accuracy": accuracy}, fisher)
  table.curves = {halving_replay.CURVE_KEY: curves}  # as tables.load gives them
  return table


def test_bench_script(tmp_path, monkeypatch, capsys):
  table = _bench_table()
  monkeypatch.setattr(halving_replay.tables, "load", lambda name: table)
  halving_replay.main(["--seeds", "2", "--batch", "9", "--strategies", "random,evolution",
                       "--tie", "0.002", "--layouts", "", "--json", str(tmp_path / "r.json"),
                       "--plot", str(tmp_path / "cost.png")])
  out = capsys.readouterr().out
  for name in ("random ", "random@9", "random+halving", "evolution ", "evolution@9",
               "evolution+halving"):
    assert name in out
  assert "Spearman" in out and "k=10 1.000" in out
  budget = cost_replay.random_search_budget(table.metrics["Validation Accuracy"], 10,
                                            tie=0.002)
  assert f"epoch budget {budget} " in out
  with open(tmp_path / "r.json", encoding="utf-8") as f:
    document = json.load(f)
  assert len(document["spearman_per_epoch"]) == 10 and document["epoch_budget"] == budget
  assert (tmp_path / "cost.png").exists()

  table.curves = {}
  with pytest.raises(SystemExit) as stopped:
    halving_replay.main(["--seeds", "1"])
  assert stopped.value.code == 1
  assert "no 'Validation Accuracy Curve'" in capsys.readouterr().err
