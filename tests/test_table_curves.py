"""Learning curves in benchmark tables: read, write, subset, the columnar cache, and the curves
mode benchmark writes from the store's evaluations."""

from __future__ import annotations

import importlib
import json
import math
import os
import re

import numpy as np
import pytest

from actbench import modes, tables
from actbench.search.store_base import Evaluation, curve_key
from actbench.tables import table as table_module
from tests.test_tables import _assert_tables_equal, _canonical, _dump, _entries

cache_module = importlib.import_module("actbench.tables.cache")

NAN = math.nan
VA, VL = "Validation Accuracy Curve", "Validation Loss Curve"
TA, TL = "Train Accuracy Curve", "Train Loss Curve"

# Entry index -> its curves. Entry 0 has none (rows before a curve's first entry are NaN),
# lengths differ (the longest sets the width), null and NaN are missing values, and no entry
# has a "Train Loss Curve".
CURVES = {
    1: {VA: [0.1, 0.2, 0.3], VL: [2.0, 1.5, 1.2], TA: [0.15, 0.25, 0.35]},
    2: {VA: [0.1, None, 0.4, 0.5], TA: [0.2, 0.3, 0.4, 0.5]},
    3: {VA: [0.3]},
    4: {VA: []},
    5: {VA: [NAN, NAN]},
    6: {VA: [1, 0, 1]},  # integers are numbers
}
# What `read` makes of them, written out by hand.
EXPECTED = {
    TA: [[NAN] * 4, [0.15, 0.25, 0.35, NAN], [0.2, 0.3, 0.4, 0.5]] + [[NAN] * 4] * 9,
    VA: [[NAN] * 4, [0.1, 0.2, 0.3, NAN], [0.1, NAN, 0.4, 0.5], [0.3, NAN, NAN, NAN],
         [NAN] * 4, [NAN] * 4, [1.0, 0.0, 1.0, NAN]] + [[NAN] * 4] * 5,
    VL: [[NAN] * 3, [2.0, 1.5, 1.2]] + [[NAN] * 3] * 10,
}


def _curved_entries() -> dict:
  entries = _entries(12)
  for i, name in enumerate(entries):
    entries[name].update(CURVES.get(i, {}))
  return entries


@pytest.fixture(name="source")
def fixture_source(tmp_path):
  return _dump(_curved_entries(), tmp_path / "curves.json")


def _check_curves(table: tables.Table):
  assert list(table.curves) == [TA, VA, VL]  # CURVE_KEYS order, whatever the files' order
  for key, rows in EXPECTED.items():
    assert table.curves[key].dtype == np.float64
    np.testing.assert_array_equal(table.curves[key], np.array(rows))


def test_read_pads_ragged_curves_with_nan(source):
  table = tables.read(source)
  _check_curves(table)
  assert table.fisher.shape == (12, 37)  # the other columns as before
  assert "curves={'Train Accuracy Curve': 4" in repr(table)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 64])
def test_read_streams_curves_through_tiny_chunks(tmp_path, chunk_size):
  source = _dump(_curved_entries(), tmp_path / "raw.json", ascii_only=False)
  table = tables.read(source, _chunk_size=chunk_size)
  _check_curves(table)
  _assert_tables_equal(table, tables.read(source))


def test_write_keeps_the_width_and_leaves_out_absent_curves(source, tmp_path):
  table = tables.read(source)
  for path in (str(tmp_path / "copy.json"), str(tmp_path / "copy.json.gz")):
    tables.write(table, path)
    _assert_tables_equal(tables.read(path), table)
    _assert_tables_equal(tables.read(path, _chunk_size=3), table)
  with open(tmp_path / "copy.json", encoding="utf-8") as f:
    written = list(json.load(f).values())
  # Every curve written at the table's width, NaN kept; an all-NaN row written as no curve.
  assert _canonical(written[3][VA]) == [0.3, "<NaN>", "<NaN>", "<NaN>"]
  assert _canonical(written[2][VA]) == [0.1, "<NaN>", 0.4, 0.5]
  assert [sorted(k for k in entry if k in tables.CURVE_KEYS) for entry in written] == [
      [], [TA, VA, VL], [TA, VA], [VA], [], [], [VA], [], [], [], [], []]


def test_subset_and_curve(source):
  table = tables.read(source)
  part = table.subset([6, 1])
  np.testing.assert_array_equal(part.curve(), [[1.0, 0.0, 1.0, NAN], [0.1, 0.2, 0.3, NAN]])
  np.testing.assert_array_equal(part.curve("val", "loss"), [[NAN] * 3, [2.0, 1.5, 1.2]])
  np.testing.assert_array_equal(table.subset(np.arange(12) == 2).curve("Train"),
                                [[0.2, 0.3, 0.4, 0.5]])
  assert table.curve("validation", "Accuracy") is table.curves[VA]
  with pytest.raises(KeyError, match=re.escape(
      "no 'Train Loss Curve' in this table of 12 entries; its curves are "
      "['Train Accuracy Curve', 'Validation Accuracy Curve', 'Validation Loss Curve']")):
    table.curve("train", "loss")
  plain = tables.read(_dump(_entries(3), os.path.dirname(source) + "/plain.json"))
  with pytest.raises(KeyError, match="it has no curves"):
    plain.curve()


def test_tables_without_curves_load_as_before(tmp_path):
  table = tables.read(_dump(_entries(8), tmp_path / "plain.json"))
  assert table.curves == {}
  assert "curves" not in repr(table)
  assert tables.Table(table.names, table.equivalents, table.metrics, table.fisher).curves == {}
  assert table.subset([1, 0]).curves == {}
  # v1, shipped before curves, reads as it did; v2 was rebuilt with them.
  assert tables.read(cache_module.bundled_path("digits-v1")).curves == {}


def test_table_checks_its_curves():
  with pytest.raises(tables.BenchmarkError, match="inconsistent.*curves.*Validation Acc"):
    tables.Table(["a(x)", "b(x)"], [[], []], {}, np.zeros((2, 0)), {VA: np.zeros((3, 4))})
  with pytest.raises(tables.BenchmarkError, match="inconsistent"):
    tables.Table(["a(x)"], [[]], {}, np.zeros((1, 0)), {VA: np.zeros(1)})
  with pytest.raises(tables.BenchmarkError, match="unknown curve keys \\['Test Loss Curve'\\]"):
    tables.Table(["a(x)"], [[]], {}, np.zeros((1, 0)), {"Test Loss Curve": np.zeros((1, 2))})


def test_a_list_under_another_key_is_still_ignored(tmp_path):
  path = _dump({"a(x)": {"Test Accuracy Curve": [0.5], VA: [0.25]}}, tmp_path / "other.json")
  with pytest.warns(UserWarning, match="Test Accuracy Curve"):
    table = tables.read(path)
  assert list(table.curves) == [VA] and table.metrics == {}


@pytest.mark.parametrize("value, message", [
    ('"0.5"', "is a string, expected a list of numbers"),
    ("0.5", "is a number, expected a list of numbers"),
    ("null", "is null, expected a list of numbers"),
    ('{"1": 0.5}', "is an object, expected a list of numbers"),
    ("[[0.1, 0.2]]", "is not a flat list of numbers: value 0 is a list"),
    ('[0.1, "0.2"]', "is not a flat list of numbers: value 1 is a string"),
    (f"[0.1, {10**400}]", "has a number too large for a float"),
])
def test_a_malformed_curve_is_one_clear_error(tmp_path, value, message):
  head = '{"a(x)": {"Validation Accuracy": 0.5, "Validation Accuracy Curve": [0.5]},\n "b(x)": '
  text = head + '{"Train Accuracy": 0.25, "Validation Accuracy Curve": ' + value + "}}"
  path = tmp_path / "bad.json"
  path.write_text(text, encoding="utf-8")
  for chunk_size in (2, 1 << 20):
    with pytest.raises(tables.BenchmarkError) as error:
      tables.read(path, _chunk_size=chunk_size)
    text_of = str(error.value)
    assert text_of == (f"{path}: entry 'b(x)' (character {len(head)}): "
                       f"'Validation Accuracy Curve' {message}"), text_of


def _load_counting(source, cache_dir, monkeypatch) -> tuple[tables.Table, int]:
  """tables.load, and how many times it parsed the JSON."""
  calls = []
  real = table_module.read_hashed
  monkeypatch.setattr(cache_module, "read_hashed", lambda *a, **k: calls.append(1) or real(*a, **k))
  table = tables.load(source, cache_dir=cache_dir)
  monkeypatch.setattr(cache_module, "read_hashed", real)
  return table, len(calls)


def test_cache_round_trips_curves(source, tmp_path, monkeypatch, caplog):
  cache_dir = tmp_path / "cache"
  expected = tables.read(source)
  first, parsed = _load_counting(source, cache_dir, monkeypatch)
  assert parsed == 1
  _assert_tables_equal(first, expected)
  cached, parsed = _load_counting(source, cache_dir, monkeypatch)
  assert parsed == 0  # from the columns
  _assert_tables_equal(cached, expected)
  _check_curves(cached)

  # A changed curve in the source is parsed again.
  entries = _curved_entries()
  entries[list(entries)[3]][VA] = [0.75, 0.5]
  _dump(entries, source)
  os.utime(source, ns=(1, 1))
  changed, parsed = _load_counting(source, cache_dir, monkeypatch)
  assert parsed == 1
  np.testing.assert_array_equal(changed.curve()[3], [0.75, 0.5, NAN, NAN])

  # A cache that lost a curve's array is rebuilt, not read as a table without that curve.
  path = cache_module.cache_path(source, str(cache_dir))
  with np.load(path) as arrays:
    kept = {name: arrays[name] for name in arrays.files if name != "curve1"}
  with open(path, "wb") as f:
    np.savez(f, **kept)
  with caplog.at_level("INFO", logger="actbench.tables.cache"):
    rebuilt, parsed = _load_counting(source, cache_dir, monkeypatch)
  assert parsed == 1 and "unreadable" in caplog.text
  _assert_tables_equal(rebuilt, changed)


def test_a_cache_written_before_curves_is_rebuilt(source, tmp_path, monkeypatch, caplog):
  """A format-1 cache (no curves in its layout) of a source that has curves: its key matches
  the source in everything but the format, and the source is parsed again."""
  cache_dir = tmp_path / "cache"
  expected = tables.read(source)
  tables.load(source, cache_dir=cache_dir)
  path = cache_module.cache_path(source, str(cache_dir))
  with np.load(path) as arrays:
    meta = json.loads(arrays["meta"].tobytes())
    old = {name: arrays[name] for name in ("text", "metrics", "fisher")}
  meta = {field: value for field, value in meta.items() if field != "curve_keys"}
  meta["format"] = 1
  with open(path, "wb") as f:  # the layout version 1 wrote
    np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **old)
  with caplog.at_level("INFO", logger="actbench.tables.cache"):
    table, parsed = _load_counting(source, cache_dir, monkeypatch)
  assert parsed == 1
  assert "stale (format 1, this version reads 2)" in caplog.text
  _assert_tables_equal(table, expected)
  with np.load(path) as arrays:
    assert json.loads(arrays["meta"].tobytes())["curve_keys"] == [TA, VA, VL]
  assert _load_counting(source, cache_dir, monkeypatch)[1] == 0


def _evaluation(class_id: int, status: str, final: dict, curves: dict) -> Evaluation:
  """A store record as the search writes it: final figures and per-epoch curve values."""
  metrics = dict(final)
  for name, values in curves.items():
    metrics.update({curve_key(name, epoch): value for epoch, value in enumerate(values, 1)})
  return Evaluation(class_id=class_id, status=status, metrics=metrics, per_seed=[],
                    runtime_s=10.0 + class_id)


def _final(train_accuracy, validation_accuracy, train_loss, validation_loss) -> dict:
  return {"train_accuracy": train_accuracy, "validation_accuracy": validation_accuracy,
          "train_loss": train_loss, "validation_loss": validation_loss,
          "test_accuracy": 0.5, "test_loss": 1.0}


def _evaluations() -> dict[int, Evaluation]:
  evaluations = [
      # Trained 3 epochs; its evaluation after epoch 2 was not finite, the last one is.
      _evaluation(0, "ok", _final(0.7, 0.55, 0.6, 0.8), {
          "train_accuracy": [0.5, 0.6, 0.7], "validation_accuracy": [0.4, 0.5, 0.55],
          "train_loss": [1.0, 0.8, 0.6], "validation_loss": [1.1, 0.9, 0.8],
          "failed": [0.0, 1.0, 0.0]}),
      # Failed in epoch 2 (and, failed in the end, at its last epoch whatever its flag says).
      _evaluation(1, "failed", _final(0.1, 0.1, NAN, NAN), {
          "train_accuracy": [0.3, 0.1, 0.1], "validation_accuracy": [0.3, 0.1, 0.1],
          "train_loss": [2.0, 50.0, NAN], "validation_loss": [2.1, 60.0, NAN],
          "failed": [0.0, 1.0, 0.0]}),
      # Recorded before curves existed.
      _evaluation(2, "ok", _final(0.8, 0.6, 0.5, 0.7), {}),
      # Failed (no validation accuracy at the end) with no failed flag: its last epoch is NaN.
      _evaluation(3, "failed", _final(0.5, NAN, 1.3, 1.45), {
          "train_accuracy": [0.4, 0.45, 0.5], "validation_accuracy": [0.2, 0.25, 0.3],
          "train_loss": [1.5, 1.4, 1.3], "validation_loss": [1.6, 1.5, 1.45],
          "failed": [0.0, 0.0, 0.0]}),
      # Two epochs, accuracy curves only, no failed curve.
      _evaluation(5, "ok", _final(0.75, 0.7, 0.4, 0.6), {
          "train_accuracy": [0.65, 0.75], "validation_accuracy": [0.6, 0.7]}),
  ]
  by_id = {evaluation.class_id: evaluation for evaluation in evaluations}
  return {i: by_id[i] for i in (3, 0, 5, 2, 1)}  # a store's evaluation order, not class order


CLASSES = [["relu(x)"], ["tanh(x)", "neg(neg(tanh(x)))"], ["x"], ["sigmoid(x)"], ["abs(x)"],
           ["swish(x)"]]


def test_benchmark_table_writes_the_store_curves(tmp_path):
  evaluations = _evaluations()
  fisher_rows = np.arange(12, dtype=np.float32).reshape(6, 2)
  table = modes.benchmark_table(CLASSES, evaluations, fisher_rows)
  assert table.names == ["relu(x)", "tanh(x)", "x", "sigmoid(x)", "swish(x)"]  # class 4: none
  np.testing.assert_array_equal(table.metrics["Diverged"], [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(table.accuracy(), [0.55, NAN, 0.6, NAN, 0.7])
  expected = {
      TA: [[0.5, NAN, 0.7], [0.3, NAN, NAN], [NAN] * 3, [0.4, 0.45, NAN], [0.65, 0.75, NAN]],
      VA: [[0.4, NAN, 0.55], [0.3, NAN, NAN], [NAN] * 3, [0.2, 0.25, NAN], [0.6, 0.7, NAN]],
      TL: [[1.0, NAN, 0.6], [2.0, NAN, NAN], [NAN] * 3, [1.5, 1.4, NAN], [NAN] * 3],
      VL: [[1.1, NAN, 0.8], [2.1, NAN, NAN], [NAN] * 3, [1.6, 1.5, NAN], [NAN] * 3],
  }
  assert list(table.curves) == list(tables.CURVE_KEYS) == [TA, VA, TL, VL]
  for key, rows in expected.items():
    np.testing.assert_array_equal(table.curves[key], np.array(rows), err_msg=key)

  # The last value of a class's own validation accuracy curve is its "Validation Accuracy"
  # (NaN for the failed ones).
  for row, class_id in enumerate(sorted(evaluations)):
    epochs = len(evaluations[class_id].curve("validation_accuracy"))
    if epochs:
      last = table.curve()[row, epochs - 1]
      final = table.metrics["Validation Accuracy"][row]
      if evaluations[class_id].status == "ok":
        assert last == final
      else:
        assert math.isnan(last) and math.isnan(final)

  path = str(tmp_path / "bench.json")  # as mode benchmark writes and loads it
  tables.write(table, path)
  _assert_tables_equal(tables.load(path, cache_dir=tmp_path / "cache"), table)
  _assert_tables_equal(tables.load(path, cache_dir=tmp_path / "cache"), table)


def test_benchmark_table_of_classes_without_curves_has_none():
  evaluations = {i: _evaluation(i, "ok", _final(0.5, 0.5, 1.0, 1.0), {}) for i in range(3)}
  table = modes.benchmark_table(CLASSES[:3], evaluations, np.zeros((3, 0), np.float32))
  assert table.curves == {} and len(table) == 3
  # A store without validation curves (data without a validation split): only the train ones.
  evaluations[1] = _evaluation(1, "ok", _final(0.5, 0.5, 1.0, 1.0),
                               {"train_accuracy": [0.25, 0.5], "failed": [0.0, 0.0]})
  table = modes.benchmark_table(CLASSES[:3], evaluations, np.zeros((3, 0), np.float32))
  assert list(table.curves) == [TA]
  np.testing.assert_array_equal(table.curve("train"), [[NAN, NAN], [0.25, 0.5], [NAN, NAN]])
