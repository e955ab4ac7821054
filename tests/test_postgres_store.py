"""The PostgreSQL store against a real server (tests/postgres_server.py): the same answers as
the SQLite store for the same operations, many searches in one database, outages waited out,
nothing lost when the database stays away, nothing recorded twice, and 16 processes claiming
at once (bench/store_load.py)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import threading

import numpy as np
import pytest

from actbench import config_fields, modes
from actbench.search import journal
from actbench.search import store as store_lib
from actbench.search.store import Evaluation, StoreError
from bench import store_load
from configs import quickstart

SCHEMA = "binary(unary(x),unary(x))"


def _classes(n: int) -> list[list[str]]:
  return [[f"rep{i}(x)"] + [f"alias{i}_{j}(x)" for j in range(i % 3)] for i in range(n)]


def _evaluation(class_id: int, worker: str = "w", **overrides) -> Evaluation:
  values = dict(class_id=class_id, status="ok",
                metrics={"validation_accuracy": 0.5 + class_id / 1000, "train_loss": math.nan},
                per_seed=[{"seed": 0, "validation_accuracy": 0.5}], runtime_s=2.5,
                worker=worker, finished_at=1000.0 + class_id)
  values.update(overrides)
  return Evaluation(**values)


def _scenario(db) -> list:
  """Every store operation a search uses, in the order a search would; what each answered."""
  answers = []
  db.init_space(SCHEMA, _classes(12))
  db.init_space(SCHEMA, _classes(12))  # a resumed search
  answers.append(db.classes())
  answers.append(db.set_meta_if_absent("recipe", "r1"))
  answers.append(db.set_meta_if_absent("recipe", "r2"))  # the first stays
  db.set_meta("data", "d1")
  answers.append(db.fingerprints())
  rows = np.arange(36, dtype=np.float32).reshape(12, 3) / 7
  rows[2, 1] = np.inf
  db.put_features("outputs", range(6), rows[:6])
  db.put_features("outputs", range(6, 12), rows[6:])
  answers.append([a.tolist() for a in db.features("outputs")])
  # Claims: candidate order, others' skipped, a worker's own first, fisher claims apart.
  answers.append(db.claim([5, 3, 1, 7, 9], 3, "a", 60.0))
  answers.append(db.claim([5, 3, 1, 7, 9, 11], 2, "b", 60.0))
  answers.append(db.claim([9, 8, 7, 5], 2, "a", 60.0))
  answers.append(db.claim([1, 2, 3, 4], 3, "f", 60.0, task="fisher"))
  answers.append(db.claim([4, 0], 2, "b", -1.0))  # expired at once
  answers.append(db.claim([4, 0, 6], 2, "c", 60.0))  # takes over b's expired claims
  answers.append(db.claim([10, 11], 2, "c", 60.0, dead=lambda owner: owner == "b"))
  answers.append(sorted(db.heartbeat("a", 60.0)))
  answers.append(db.claimed_ids())
  answers.append(db.claimed_ids(task="fisher"))
  db.put_features("fisher", [1, 2], np.ones((2, 4), np.float32))  # drops those claims
  answers.append(db.claimed_ids(task="fisher"))
  answers.append(db.claim([1, 2, 3, 4], 4, "g", 60.0, task="fisher"))  # 1, 2 have rows
  db.release([3], "g", task="fisher")
  answers.append(db.claimed_ids(task="fisher"))
  # Records: the first stays, the same one again is "already recorded", claims go.
  answers.append(db.record(_evaluation(5, "a")))
  answers.append(db.record(_evaluation(5, "a")))
  answers.append(db.record(_evaluation(5, "b", metrics={"validation_accuracy": 0.9})))
  answers.append(db.record_many([_evaluation(3, "a", status="failed"), _evaluation(1, "a")]))
  answers.append(repr(db.evaluations()))  # repr: NaN compares equal
  answers.append(sorted(db.evaluated_ids()))
  answers.append(db.claimed_ids())
  answers.append(db.class_of("alias4_0(x)"))
  return answers


def test_the_postgresql_store_answers_as_the_sqlite_store_does(tmp_path, postgres_url):
  with store_lib.open_store("", workdir=str(tmp_path / "sqlite")) as sqlite_db:
    expected = _scenario(sqlite_db)
  with store_lib.open_store(postgres_url, workdir=str(tmp_path / "pg"), name="s") as pg_db:
    got = _scenario(pg_db)
  assert got == expected
  assert expected[5] == [3, 1, 7] or expected[5] == [5, 3, 1]  # the reference is sane
  # Both journals hold the same three records (the repeated one is not journaled twice).
  lines = [journal.read(os.path.join(tmp_path / d, "search.evaluations.jsonl"))
           for d in ("sqlite", "pg")]
  assert [r["class_id"] for r in lines[0]] == [r["class_id"] for r in lines[1]] == [5, 3, 1]
  assert all(r["recipe"] == "r1" and r["data"] == "d1" for r in lines[1])


def test_one_database_holds_many_searches_apart(tmp_path, postgres_url):
  with store_lib.open_store(postgres_url, workdir=str(tmp_path), name="one") as one, \
       store_lib.open_store(postgres_url, workdir=str(tmp_path), name="two") as two:
    one.init_space(SCHEMA, _classes(4))
    two.init_space("unary(x)", [["relu(x)"], ["tanh(x)"]])
    one.record(_evaluation(3))
    assert two.evaluations() == {} and two.num_classes == 2
    assert list(one.evaluations()) == [3]
  with pytest.raises(StoreError, match="holds a search of space .* another --config.search.name"):
    with store_lib.open_store(postgres_url, workdir=str(tmp_path), name="two") as again:
      again.init_space(SCHEMA, _classes(4))


def test_a_missing_name_or_a_bad_store_is_one_clear_line(tmp_path, postgres_url):
  with pytest.raises(StoreError, match="--config.search.name=NAME"):
    store_lib.open_store(postgres_url, workdir=str(tmp_path), name="")
  with pytest.raises(StoreError, match='database "absent" does not exist'):
    store_lib.open_store(postgres_url.rsplit("/", 1)[0] + "/absent", workdir=str(tmp_path),
                         name="x", retry_s=5)
  with pytest.raises(StoreError, match="no search of that name"):
    store_lib.open_store(postgres_url, workdir=str(tmp_path), name="typo", create=False)
  config = quickstart.get_config()
  config.search.store = postgres_url
  assert config_fields.problems(config) == [
      "config.search.name is empty: a postgresql:// store holds many searches; name this one "
      "(every worker of the search gives the same name)"]
  config.search.store = "mysql://host/db"
  assert "config.search.store = 'mysql://host/db'" in config_fields.problems(config)[0]


def test_an_outage_is_waited_out_with_one_line_and_loses_nothing(tmp_path, postgres_server,
                                                                 postgres_url, caplog):
  db = store_lib.open_store(postgres_url, workdir=str(tmp_path), name="s", retry_s=60)
  db.init_space(SCHEMA, _classes(6))
  db.record(_evaluation(0))
  postgres_server.stop(mode="immediate")  # a crash, with a connection open
  restart = threading.Timer(3.0, postgres_server.start)
  restart.start()
  try:
    with caplog.at_level(logging.WARNING):
      assert db.record_many([_evaluation(1), _evaluation(2)]) == [True, True]
      assert db.claim(range(6), 2, "w", 60.0) == [3, 4]
  finally:
    restart.join()
  outage = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
  assert len(outage) == 1, outage
  assert sum("is back after" in r.getMessage() for r in caplog.records) == 1
  assert sorted(db.evaluations()) == [0, 1, 2]
  db.close()


def test_a_database_away_too_long_loses_no_result(tmp_path, postgres_server, postgres_url):
  workdir = str(tmp_path)
  with store_lib.open_store(postgres_url, workdir=workdir, name="s") as db:
    db.init_space(SCHEMA, _classes(6))
    db.set_meta("recipe", "r1")
    db.fingerprints()
  db = store_lib.open_store(postgres_url, workdir=workdir, name="s", retry_s=1.0)
  db.init_space(SCHEMA, _classes(6))
  db.fingerprints()
  postgres_server.stop(mode="immediate")
  try:
    with pytest.raises(StoreError, match="unreachable for .* kept in .*search.evaluations.jsonl"):
      db.record_many([_evaluation(4), _evaluation(2)])
  finally:
    db.close()
    postgres_server.start()
  lines = journal.read(os.path.join(workdir, "search.evaluations.jsonl"))
  assert [(r["class_id"], r["recipe"]) for r in lines] == [(4, "r1"), (2, "r1")]
  with store_lib.open_store(postgres_url, workdir=workdir, name="s") as db:  # the next run
    assert db.replay_journal() == 2
    assert repr(db.evaluations()) == repr({4: _evaluation(4), 2: _evaluation(2)})


def test_journal_lines_of_another_recipe_are_never_replayed(tmp_path, postgres_url, caplog):
  # The user deletes search.sqlite to start over and changes the recipe: the old journal
  # stays beside the new store and must not be mixed into it.
  workdir = str(tmp_path)
  with store_lib.open_store("", workdir=workdir) as db:
    db.init_space(SCHEMA, _classes(6))
    db.set_meta("recipe", "old")
    db.record_many([_evaluation(0), _evaluation(1)])
  os.remove(os.path.join(workdir, "search.sqlite"))
  for location in ("", postgres_url):
    with store_lib.open_store(location, workdir=workdir, name="s") as db:
      db.init_space(SCHEMA, _classes(6))
      db.set_meta("recipe", "new")
      with caplog.at_level(logging.WARNING):
        assert db.replay_journal() == 0
      assert db.evaluations() == {}
  assert any("skipped 2 journal lines" in r.getMessage() and "2 of another recipe" in
             r.getMessage() for r in caplog.records)


def test_mode_report_reads_the_shared_store_from_any_machine(tmp_path, postgres_url):
  # What a worker elsewhere recorded (here: written directly), reported from a laptop.
  with store_lib.open_store(postgres_url, workdir=str(tmp_path / "worker"), name="s") as db:
    db.init_space("unary(x)", [["relu(x)"], ["tanh(x)"], ["elu(x)"]])
    db.record_many([_evaluation(1, metrics={"validation_accuracy": 0.75}),
                    _evaluation(0, metrics={"validation_accuracy": 0.5}),
                    _evaluation(2, status="failed", metrics={})])
  config = quickstart.get_config()
  config.mode = "report"
  config.search.store, config.search.name = postgres_url, "s"
  laptop = tmp_path / "laptop"
  modes.run(config, str(laptop))
  with open(laptop / "leaderboard.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [(r["activation"], r["validation_accuracy"]) for r in rows[:2]] == [
      ("tanh(x)", "0.75"), ("relu(x)", "0.5")]
  assert len(rows) == 3


@pytest.mark.slow
def test_16_processes_claim_and_record_2000_classes_once(tmp_path, postgres_url):
  # bench/store_load.py measures 5,000 (README "Many machines"); 2,000 keep CI's time.
  figures = store_load.run(postgres_url, "load", processes=16, classes=2000, batch=8,
                           scratch=str(tmp_path))
  print(json.dumps(figures))  # the rate, for the record (bench/store_load.py prints it too)
  assert figures["recorded_twice"] == 0
  assert figures["lost"] == 0
  assert figures["owners_agree"]
