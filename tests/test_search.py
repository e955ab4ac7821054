"""The search loop, benchmark tables, replay and report, end to end on a tiny space of digits
functions; and the launcher's search mode on the quickstart smoke config."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from actbench import modes, search, tables
from actbench.engine import train
from actbench.search import loop, store, strategies, workers
from configs import quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny space: 5 x 5 x 2 = 50 names, a few dozen functions (tanh, relu, ... and their sums
# and maxima), cheap enough to train every class.
UNARY = ("zero", "identity", "relu", "tanh", "sigmoid")
BINARY = ("add", "max")
BASELINES = ("relu(x)", "tanh(x)", "sigmoid(x)")
# Every function of the tiny space is finite; this baseline outside it is not (1/0 = +inf at
# every point), so the `searched` workdir has a class that features must skip.
NON_FINITE = "reciprocal(zero(x))"


def tiny_config(**search_fields):
  config = quickstart.get_config("smoke")
  config.search.unary = UNARY
  config.search.binary = BINARY
  config.search.baselines = BASELINES
  config.search.budget = 7
  config.search.population_size = 3
  config.train.num_epochs = 1
  config.fisher.batch_size = 64
  config.replay.seeds = 3
  config.replay.budget = 6
  config.replay.quality_sizes = (3, 6)
  for name, value in search_fields.items():
    setattr(config.search, name, value)
  return config


def searched_config(**search_fields):
  """The config of the `searched` workdir: tiny_config with NON_FINITE as a fourth baseline."""
  return tiny_config(baselines=BASELINES + (NON_FINITE,), **search_fields)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("search"))
  text = modes.run(searched_config(), workdir)
  return workdir, text


def spy_on_training(monkeypatch) -> list[list[str]]:
  """The names of every population trained from now on, in order."""
  trained = []
  real = train.train_population

  def spy(config, names, *args, **kwargs):
    trained.append(list(names))
    return real(config, names, *args, **kwargs)

  monkeypatch.setattr(train, "train_population", spy)
  return trained


def _evaluations(workdir):
  with store.Store(search.store_path(workdir)) as db:
    return db.classes(), db.evaluations()


@pytest.mark.slow
def test_search_evaluates_baselines_then_surrogate_picks(searched):
  workdir, text = searched
  classes, evaluations = _evaluations(workdir)
  assert len(evaluations) == 7
  names = [classes[i][0] for i in evaluations]
  assert names[:4] == list(BASELINES) + [NON_FINITE]  # baselines first, in order
  assert evaluations[list(evaluations)[3]].status == "failed"  # 1/0 cannot train
  assert len(set(evaluations)) == 7
  for evaluation in evaluations.values():
    assert evaluation.status in ("ok", "failed")
    assert len(evaluation.per_seed) == 1  # the smoke config trains one seed
    if evaluation.status == "ok":
      assert 0.0 <= evaluation.metrics["validation_accuracy"] <= 1.0
  for class_id in list(evaluations)[:2]:  # relu and tanh learn digits in one epoch
    assert evaluations[class_id].metrics["validation_accuracy"] > 0.5
  for figure in ("leaderboard.csv", "best_functions.png", "surrogate_map.png",
                 "search_curve.png"):
    assert os.path.getsize(os.path.join(workdir, figure)) > 0
  with open(os.path.join(workdir, "leaderboard.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 7 and set(row["activation"] for row in rows) == set(names)
  accuracies = [float(row["validation_accuracy"]) for row in rows if row["diverged"] == "False"]
  assert accuracies == sorted(accuracies, reverse=True)
  failed = [row["diverged"] for row in rows]
  assert failed == sorted(failed)  # failed functions last
  assert rows[0]["activation"] in text  # the printed leaderboard
  # Finished populations leave no checkpoints behind.
  assert not os.listdir(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow
def test_search_features_cover_the_space_and_skip_non_finite_functions(searched):
  workdir, _ = searched
  with store.Store(search.store_path(workdir)) as db:
    outputs, have_outputs = db.features(search.OUTPUTS)
    fisher, have_fisher = db.features(search.FISHER)
    classes = db.classes()
  assert have_outputs.all() and have_fisher.all()
  finite = np.isfinite(outputs).all(axis=1)
  # The one non-finite class is the NON_FINITE baseline: +inf everywhere, its Fisher row NaN.
  assert np.flatnonzero(~finite).tolist() == [
      i for i, members in enumerate(classes) if NON_FINITE in members]
  assert np.all(outputs[~finite] == np.inf)
  assert np.isfinite(fisher[finite]).mean() > 0.9  # nearly every finite function has some
  assert np.isnan(fisher[~finite]).all()


@pytest.mark.slow
def test_without_a_fisher_budget_every_class_is_featured_and_aquasurf_proposes(searched):
  workdir, _ = searched
  config = searched_config()
  with store.Store(search.store_path(workdir)) as db:
    classes, evaluations = db.classes(), db.evaluations()
    outputs, fisher = db.features(search.OUTPUTS)[0], db.features(search.FISHER)[0]
    layout = db.features(search.embedding_kind(config))[0]
    assert db.feature_presence(search.SKETCH)[1].sum() == 0  # fisher_budget 0: no rounds
    assert db.get_meta("featurize.round.0") is None
  # The search's populations are aquasurf's proposals over every class, population by
  # population, from the history before each.
  candidates = strategies.Candidates(classes, outputs, fisher, schema=config.search.space,
                                     baselines=search.baseline_names(config))
  strategy = strategies.make_strategy("aquasurf", candidates, seed=int(config.seed),
                                      embedding=layout, neighbors=3)
  order, history = list(evaluations), {}
  for start in range(0, len(order), 3):
    population = order[start:start + 3]
    assert sorted(strategy.propose(history, len(population))) == sorted(population)
    for class_id in population:
      evaluation = evaluations[class_id]
      history[class_id] = (evaluation.metrics["validation_accuracy"]
                           if evaluation.status == "ok" else math.nan)


@pytest.mark.slow
def test_a_restart_reads_its_space_from_the_store_without_enumerating_it(searched,
                                                                         monkeypatch):
  workdir, _ = searched
  with store.Store(search.store_path(workdir)) as db:
    before = db.evaluations()

  def enumerated(config):
    raise AssertionError("the space was enumerated again")

  monkeypatch.setattr(loop, "space_classes", enumerated)
  trained = spy_on_training(monkeypatch)
  modes.run(searched_config(), workdir)  # the same search, complete: nothing to train
  assert not trained
  with store.Store(search.store_path(workdir)) as db:
    assert repr(db.evaluations()) == repr(before)
  # Other space fields enumerate (and the store refuses another space, as before).
  with pytest.raises(AssertionError, match="enumerated again"):
    modes.run(tiny_config(baselines=("relu(x)",)), workdir)


@pytest.mark.slow
def test_search_resumes_and_extends_without_retraining(searched, tmp_path, monkeypatch):
  workdir, _ = searched
  copy = tmp_path / "copy"
  os.makedirs(copy)
  with store.Store(search.store_path(workdir)) as source, store.Store(
      str(copy / search.STORE_NAME)) as target:
    target.init_space(searched_config().search.space, source.classes())
    for kind in (search.OUTPUTS, search.FISHER):
      rows, _ = source.features(kind)
      target.put_features(kind, range(len(rows)), rows)
    for evaluation in source.evaluations().values():
      target.record(evaluation)
  before = _evaluations(str(copy))[1]
  trained = spy_on_training(monkeypatch)
  modes.run(searched_config(budget=9), str(copy))
  after = _evaluations(str(copy))[1]
  assert len(after) == 9
  assert list(after)[:7] == list(before)  # kept, in order
  for class_id, evaluation in before.items():
    # repr: the failed NON_FINITE baseline's NaN metrics compare equal too.
    assert repr(after[class_id]) == repr(evaluation)
  assert len(trained) == 1 and len(trained[0]) == 2  # only the two new classes trained


@pytest.mark.slow
def test_crash_mid_search_loses_no_finished_result(tmp_path, monkeypatch):
  config = tiny_config(budget=6)
  trained = []
  real = train.train_population

  def crash_on_second(config, names, *args, **kwargs):
    trained.append(list(names))
    if len(trained) == 2:
      raise KeyboardInterrupt("killed")
    return real(config, names, *args, **kwargs)

  monkeypatch.setattr(train, "train_population", crash_on_second)
  with pytest.raises(KeyboardInterrupt):
    modes.run(config, str(tmp_path))
  first = _evaluations(str(tmp_path))[1]
  assert len(first) == 3  # the first population finished and was recorded
  modes.run(config, str(tmp_path))
  classes, evaluations = _evaluations(str(tmp_path))
  assert len(evaluations) == 6
  for class_id, evaluation in first.items():
    assert evaluations[class_id] == evaluation
  # The restart trained the interrupted population again (same proposal), nothing finished.
  assert trained[2] == trained[1]
  assert not set(trained[0]) & set(trained[2])


@pytest.mark.slow
def test_benchmark_replay_and_report(tmp_path):
  config = tiny_config()
  config.mode = "benchmark"
  config.search.population_size = 10  # every class, in two populations
  workdir = str(tmp_path)
  text = modes.run(config, workdir)
  classes, evaluations = _evaluations(workdir)
  assert len(evaluations) == len(classes)  # every class
  path = os.path.join(workdir, config.benchmark.table)
  assert "benchmark table of" in text
  table = tables.read(path)
  assert table.names == [members[0] for members in classes]
  assert table.equivalents == [members[1:] for members in classes]
  accuracy = table.accuracy("validation")
  for row, class_id in enumerate(sorted(evaluations)):
    evaluation = evaluations[class_id]
    if evaluation.status == "ok":
      assert accuracy[row] == pytest.approx(evaluation.metrics["validation_accuracy"])
    else:
      assert math.isnan(accuracy[row]) and table.metrics["Diverged"][row] == 1
  assert table.fisher.shape[0] == len(classes) and table.fisher.shape[1] > 10

  config.mode = "replay"
  config.replay.table = path
  config.replay.quality_features = ("union", "raw")
  replay_dir = os.path.join(workdir, "replay")
  text = modes.run(config, replay_dir)
  with open(os.path.join(replay_dir, "replay.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert set(saved["replay"]["strategies"]) == {"aquasurf", "random", "evolution"}
  curve = np.asarray(saved["replay"]["strategies"]["random"]["best_so_far"], np.float64)
  assert curve.shape == (3, 6) and np.all(np.diff(np.nan_to_num(curve, nan=-1), axis=1) >= 0)
  assert set(saved["quality"]) == {"union", "raw"}
  with open(os.path.join(replay_dir, "replay-summary.json"), encoding="utf-8") as f:
    brief = json.load(f)
  assert brief["replay"]["summary"] == saved["replay"]["summary"]
  assert "strategies" not in brief["replay"]
  for name, values in saved["quality"].items():
    assert brief["quality"][name]["spearman_median"] == values["spearman_median"]
  for figure in ("search_curves.png", "surrogate_quality.png"):
    assert os.path.getsize(os.path.join(replay_dir, figure)) > 0
  assert "aquasurf" in text

  config.mode = "report"
  os.remove(os.path.join(workdir, "leaderboard.csv"))
  modes.run(config, workdir)
  with open(os.path.join(workdir, "leaderboard.csv"), encoding="utf-8") as f:
    assert len(list(csv.DictReader(f))) == len(classes)

  # The Markdown report of the table and its replays (docs/digits-bench.md is one).
  os.rename(os.path.join(replay_dir, "replay.json"), os.path.join(workdir, "replay.json"))
  config.report.document = os.path.join(workdir, "docs", "report.md")
  config.report.discussion = "What the figures mean."
  config.report.recipe = "How it was trained."
  config.report.previous_table = path  # an earlier version: here the same table, relabelled
  config.report.previous_replay = os.path.join(replay_dir, "replay-summary.json")
  config.report.previous_label = "v0"
  modes.run(config, workdir)
  with open(config.report.document, encoding="utf-8") as f:
    text = f.read()
  for heading in ("## The table", "## The best functions", "## Surrogate quality",
                  "## Replayed searches", "## Targets"):
    assert heading in text
  assert f"{len(classes)} functions" in text and "`relu(x)`" in text
  assert "| aquasurf |" in text and text.rstrip().endswith("What the figures mean.")
  assert "\n\nHow it was trained.\n\n## The table" in text  # a paragraph of its own
  assert "| aquasurf (v0) |" in text and "| union (v0) |" in text and "| v0 |" in text
  assert "- v0: median evaluations to a top-1% function: aquasurf" in text
  for figure in ("accuracy_histogram", "best_functions", "surrogate_quality", "search_curves"):
    assert f"](report/{figure}.png)" in text
    assert os.path.getsize(os.path.join(workdir, "docs", "report", figure + ".png")) > 0


@pytest.mark.slow
def test_store_of_another_space_is_refused(searched):
  workdir, _ = searched
  config = searched_config()
  config.search.binary = ("add", "mul")
  with pytest.raises(store.StoreError, match="another --workdir"):
    modes.run(config, workdir)


@pytest.mark.slow
def test_store_of_another_recipe_is_refused(searched):
  workdir, _ = searched
  config = searched_config()
  config.train.learning_rate = 0.5
  with pytest.raises(store.StoreError, match="another training recipe"):
    modes.run(config, workdir)


def test_recipe_fingerprint_ignores_later_fields_at_their_neutral_values():
  config = tiny_config()
  older = tiny_config()
  for section, fields in loop._LATER_FIELDS.items():  # pylint: disable=protected-access
    for name in fields:
      del older[section][name]  # a config written before these fields existed
  assert search.recipe_fingerprint(config) == search.recipe_fingerprint(older)
  for section, name, value in [("train", "mixup_alpha", 0.2), ("dataset", "folds", 5),
                               ("train", "divergence", "chance"),
                               ("fisher", "eigenvalue_floor", 1e-6)]:
    changed = tiny_config()
    changed[section][name] = value
    assert search.recipe_fingerprint(changed) != search.recipe_fingerprint(older), name


@pytest.mark.extended  # the launcher's search runs by default in test_readme.py and test_workers.py
def test_launcher_search_mode_on_the_smoke_config(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  args = [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py:smoke",
          f"--workdir={tmp_path}", f"--config.search.unary={UNARY!r}",
          f"--config.search.binary={BINARY!r}", "--config.search.budget=4",
          "--config.search.population_size=4", "--config.train.num_epochs=1"]
  process = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
  assert process.returncode == 0, process.stderr[-3000:]
  assert "4 of " in process.stdout and "rank" in process.stdout
  with open(tmp_path / "leaderboard.csv", encoding="utf-8") as f:
    assert len(list(csv.DictReader(f))) == 4


def test_where_the_data_lives_is_not_part_of_the_recipe(tmp_path):
  config = tiny_config()
  moved = tiny_config()
  moved.dataset.data_dir = str(tmp_path / "elsewhere")
  moved.dataset.download = False
  assert search.recipe_fingerprint(moved) == search.recipe_fingerprint(config)
  other = tiny_config()
  other.dataset.validation_size = 16
  assert search.recipe_fingerprint(other) != search.recipe_fingerprint(config)
  # A store made before, whose recipe included data_dir and download, resumed with its own
  # config: taken as this recipe's and upgraded, so the data may move from then on.
  with store.Store(str(tmp_path / "search.sqlite")) as db:
    db.init_space("unary(x)", [["relu(x)"]])
    db.set_meta("recipe", search.recipe_fingerprint(config, legacy=True))
    search.check_recipe(db, config)
    assert db.get_meta("recipe") == search.recipe_fingerprint(config)
    search.check_recipe(db, moved)
    db.set_meta("recipe", search.recipe_fingerprint(other, legacy=True))
    with pytest.raises(store.StoreError, match="another training recipe"):
      search.check_recipe(db, moved)


@pytest.mark.slow
def test_a_baseline_spelt_with_spaces_is_trained_and_recorded_under_its_normal_name(tmp_path):
  # Regression: the spaced name became its class's representative and the search raised
  # KeyError after training it, on every restart.
  config = tiny_config(baselines=("add(relu(x), tanh(x))", "tanh( x )"), budget=2,
                       population_size=2)
  summary = search.run(config, str(tmp_path), progress=False)
  names = {summary.classes[i][0]: ev.status for i, ev in summary.evaluations.items()}
  assert names == {"add(relu(x),tanh(x))": "ok", "tanh(x)": "ok"}
  assert not any(" " in name for members in summary.classes for name in members)
  again = search.run(config, str(tmp_path), progress=False)  # a restart: nothing to redo
  assert repr(again.evaluations) == repr(summary.evaluations)


@pytest.fixture(params=["handled", "ignored"])
def sigint(request):
  """SIGINT as Python handles it, or ignored: what a search started in the background by a
  shell (`nohup ... &`, a batch script) inherits."""
  handler = signal.default_int_handler if request.param == "handled" else signal.SIG_IGN
  previous = signal.signal(signal.SIGINT, handler)
  yield handler
  signal.signal(signal.SIGINT, previous)


def test_a_failing_heartbeat_stops_the_work_with_a_clear_message(tmp_path, monkeypatch,
                                                                  sigint):
  with store.Store(str(tmp_path / "search.sqlite")) as db:
    db.init_space("unary(x)", [["relu(x)"], ["tanh(x)"]])
    assert db.claim([0, 1], 2, "w", 1.0) == [0, 1]

    def refused(self, worker, ttl_s):
      raise store.StoreError(f"{self.location}: cannot extend claims: disk full")
    monkeypatch.setattr(store.Store, "heartbeat", refused)
    started = time.monotonic()
    with pytest.raises(store.StoreError, match=r"stopped: the heartbeat .* failed \(.*disk full"):
      with workers.heartbeat(db, "w", 1.0, {(store.TRAIN, 0), (store.TRAIN, 1)}):
        while time.monotonic() - started < 30:  # training, interrupted by the failure
          time.sleep(0.01)
    assert time.monotonic() - started < 10
  assert signal.getsignal(signal.SIGINT) is sigint  # as it was
