"""Act-Bench tables: streaming read and write, the columnar cache, downloads (no network)."""

from __future__ import annotations

import email.message
import gzip
import hashlib
import importlib
import io
import json
import math
import os
import re
import urllib.error
import urllib.request
import urllib.response
import warnings

import numpy as np
import pytest

from actbench import tables
from actbench.engine import fetch
from actbench.tables import table as table_module
from tests.test_fetch import Server, at_once, damage_after_streaming, flip_byte

cache_module = importlib.import_module("actbench.tables.cache")
# `actbench.tables.download` is the function (re-exported); the module is reached by name.
download_module = importlib.import_module("actbench.tables.download")

WIDTH = 37
# Names that cross chunk boundaries badly: escapes, multi-byte and astral characters.
ODD_NAMES = ['max(relu(x),"quoted"(x))', "back\\slash(x)", "ré(x)\u00e9", "emoji😀(x)",
             "tab\tand\nnewline"]


def _entries(n: int = 50, seed: int = 0) -> dict:
  """An Act-Bench-format object: NaN metrics for some entries, no Fisher CDF for two."""
  rng = np.random.default_rng(seed)
  entries = {}
  for i in range(n):
    name = ODD_NAMES[i] if i < len(ODD_NAMES) else f"add(unary{i}(x),relu(x))"
    entry = {key: float(rng.uniform(0, 3)) for key in tables.METRIC_KEYS}
    if i % 7 == 3:
      entry["Validation Accuracy"] = math.nan
      entry["Test Loss"] = math.nan
    entry["Equivalent Activation Functions"] = [name] + [f"eq{i}_{j}(x)" for j in range(i % 3)]
    if i not in (0, 30):  # the first entry has none: rows before the first CDF are NaN too
      cdf = np.cumsum(rng.uniform(size=WIDTH)).astype(np.float32)
      entry["Fisher log eigenvalue CDF"] = (cdf / cdf[-1]).tolist()  # float32-exact values
    entries[name] = entry
  return entries


def _dump(obj, path, *, ascii_only: bool = True) -> str:
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    json.dump(obj, f, ensure_ascii=ascii_only)
  return str(path)


def _canonical(value):
  """JSON values comparable with ==: NaN (never equal to itself) becomes a marker."""
  if isinstance(value, float) and math.isnan(value):
    return "<NaN>"
  if isinstance(value, dict):
    return {key: _canonical(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_canonical(item) for item in value]
  return value


def _assert_tables_equal(actual: tables.Table, expected: tables.Table):
  assert actual.names == expected.names
  assert actual.equivalents == expected.equivalents
  assert list(actual.metrics) == list(expected.metrics)
  for key, column in expected.metrics.items():
    np.testing.assert_array_equal(actual.metrics[key], column)
  assert actual.fisher.dtype == np.float32
  np.testing.assert_array_equal(actual.fisher, expected.fisher)
  assert list(actual.curves) == list(expected.curves)  # {} for tables without curves
  for key, curve in expected.curves.items():
    assert actual.curves[key].dtype == np.float64
    np.testing.assert_array_equal(actual.curves[key], curve)  # NaN == NaN here


@pytest.fixture(name="entries")
def fixture_entries():
  return _entries()


@pytest.fixture(name="source")
def fixture_source(entries, tmp_path):
  return _dump(entries, tmp_path / "act-bench-tiny.json")


def test_read_keeps_values_order_and_nan(entries, source):
  table = tables.read(source)
  assert len(table) == 50
  assert table.names == list(entries)
  assert table.equivalents == [e["Equivalent Activation Functions"] for e in entries.values()]
  assert list(table.metrics) == list(tables.METRIC_KEYS)
  for key in tables.METRIC_KEYS:
    assert table.metrics[key].dtype == np.float64
    np.testing.assert_array_equal(table.metrics[key], [e[key] for e in entries.values()])
  assert np.isnan(table.metrics["Validation Accuracy"][3])
  assert table.fisher.shape == (50, WIDTH) and table.fisher.dtype == np.float32
  assert np.isnan(table.fisher[0]).all() and np.isnan(table.fisher[30]).all()
  np.testing.assert_array_equal(table.fisher[1],
                                entries[table.names[1]]["Fisher log eigenvalue CDF"])
  np.testing.assert_array_equal(table.fisher[49], entries[table.names[49]]
                                ["Fisher log eigenvalue CDF"])


def test_write_round_trips_the_json(source, tmp_path):
  copy = str(tmp_path / "copy.json")
  tables.write(tables.read(source), copy)
  with open(source, encoding="utf-8") as f, open(copy, encoding="utf-8") as g:
    assert _canonical(json.load(g)) == _canonical(json.load(f))
  assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1000])
def test_read_streams_through_tiny_chunks(entries, tmp_path, chunk_size):
  # Raw UTF-8 (not \u escapes): multi-byte characters are split between chunks.
  source = _dump(entries, tmp_path / "raw.json", ascii_only=False)
  _assert_tables_equal(tables.read(source, _chunk_size=chunk_size), tables.read(source))
  assert tables.read(source, _chunk_size=chunk_size).names[:len(ODD_NAMES)] == ODD_NAMES


def test_fisher_rows_across_blocks(entries, source, monkeypatch):
  expected = tables.read(source)
  monkeypatch.setattr(table_module, "_BLOCK_BYTES", 3 * 4 * WIDTH)  # 3 rows a block
  _assert_tables_equal(tables.read(source), expected)


def test_gzip_read_and_write(entries, source, tmp_path):
  expected = tables.read(source)
  gzipped = _dump(entries, tmp_path / "a.json.gz")
  _assert_tables_equal(tables.read(gzipped, _chunk_size=5), expected)
  _assert_tables_equal(tables.read(gzipped, progress=True), expected)
  written = str(tmp_path / "b.json.gz")
  tables.write(expected, written)
  with gzip.open(written, "rt", encoding="utf-8") as f:
    assert list(json.load(f)) == expected.names
  _assert_tables_equal(tables.read(written), expected)


def test_extra_keys_null_metrics_and_no_fisher(tmp_path):
  source = _dump({
      "a(x)": {"Train Accuracy": None, "Diverged": True, "Notes": ["x"]},
      "b(x)": {"Train Accuracy": 0.5, "Runtime (s)": 12, "Notes": {"k": 1}},
  }, tmp_path / "extra.json")
  with pytest.warns(UserWarning, match="Notes") as record:
    table = tables.read(source)
  assert len(record) == 1
  assert list(table.metrics) == ["Train Accuracy", "Runtime (s)", "Diverged"]
  np.testing.assert_array_equal(table.metrics["Train Accuracy"], [np.nan, 0.5])
  np.testing.assert_array_equal(table.metrics["Runtime (s)"], [np.nan, 12.0])
  np.testing.assert_array_equal(table.metrics["Diverged"], [1.0, np.nan])
  assert table.fisher.shape == (2, 0)
  assert table.equivalents == [[], []]


def test_empty_object(tmp_path):
  table = tables.read(_dump({}, tmp_path / "empty.json"))
  assert len(table) == 0 and table.fisher.shape == (0, 0) and table.metrics == {}


def _text(entries) -> str:
  return json.dumps(entries)


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.999])
@pytest.mark.parametrize("chunk_size", [3, 1 << 20])
def test_truncated_file(entries, tmp_path, cut, chunk_size):
  text = _text(entries)
  path = tmp_path / "cut.json"
  path.write_text(text[:int(len(text) * cut)], encoding="utf-8")
  with pytest.raises(tables.BenchmarkError, match="ends") as error:
    tables.read(path, _chunk_size=chunk_size)
  assert str(path) in str(error.value) and "entry '" in str(error.value)


def test_every_prefix_and_damage_is_an_error_or_a_table(tmp_path):
  text = json.dumps(dict(list(_entries(6).items())[3:6]), ensure_ascii=False)
  path = tmp_path / "prefix.json"
  ends = [*range(300), *range(300, len(text), 7)]  # the names' region densely
  for end in ends:  # every proper prefix is a truncated file
    path.write_text(text[:end], encoding="utf-8")
    with pytest.raises(tables.BenchmarkError, match=re.escape(str(path))):
      tables.read(path, _chunk_size=1 + end % 5)
  rng = np.random.default_rng(0)
  for position in rng.integers(0, len(text), 300):  # never any other exception
    damaged = text[:position] + rng.choice(list('{}[]",:x0 \\')) + text[position + 1:]
    path.write_text(damaged, encoding="utf-8")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      try:
        tables.read(path, _chunk_size=int(rng.integers(1, 50)))
      except tables.BenchmarkError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("text, message", [
    ('[{"a": 1}]', "top level is not a JSON object"),
    ("", "empty"),
    ('{"a(x)": {"Train Accuracy": 1.0}} {}', "extra data"),
    ('{"a(x)": [1, 2]}', "entry 'a\\(x\\)'.*expected an object"),
    ('{"a(x)": {}, "a(x)": {}}', "entry 'a\\(x\\)'.*twice"),
    ('{"a(x)": {"Train Accuracy": "high"}}', "entry 'a\\(x\\)'.*expected a number"),
    ('{"a(x)": {"Equivalent Activation Functions": "a(x)"}}', "entry 'a\\(x\\)'.*list of strings"),
    ('{"a(x)": {"Fisher log eigenvalue CDF": [0.5, "x"]}}', "entry 'a\\(x\\)'.*list of numbers"),
    ('{"a(x)": {"Train Accuracy": 1.0,, "Test Loss": 2}}',
     "entry 'a\\(x\\)': Expecting property name.*character 32"),
    ('{"a(x)": {}; "b(x)": {}}', "expected ',' or '}' after entry 'a\\(x\\)'"),
])
def test_malformed_files(tmp_path, text, message):
  path = tmp_path / "bad.json"
  path.write_text(text, encoding="utf-8")
  for chunk_size in (2, 1 << 20):
    with pytest.raises(tables.BenchmarkError, match=message) as error:
      tables.read(path, _chunk_size=chunk_size)
    assert str(error.value).startswith(str(path))


def test_inconsistent_fisher_lengths(entries, tmp_path):
  name = list(entries)[20]
  entries[name]["Fisher log eigenvalue CDF"].append(1.0)
  path = _dump(entries, tmp_path / "fisher.json")
  with pytest.raises(tables.BenchmarkError, match=f"has {WIDTH + 1} values") as error:
    tables.read(path)
  message = str(error.value)
  assert path in message and repr(name) in message
  offset = int(message.split("(character ")[1].split(")")[0])
  assert open(path, encoding="utf-8").read()[offset - len(json.dumps(name)) - 2:offset] == (
      json.dumps(name) + ": ")


def test_not_gzip_or_not_utf8(tmp_path):
  path = tmp_path / "bad.json.gz"
  path.write_bytes(gzip.compress(b'{"a(x)": {}}')[:-12])
  with pytest.raises(tables.BenchmarkError, match="gzip"):
    tables.read(path)
  path.write_bytes(b'{"\xff(x)": {}}')
  with pytest.raises(tables.BenchmarkError, match="UTF-8"):
    tables.read(path)


def test_table_helpers(source):
  table = tables.read(source)
  assert table.index("add(unary10(x),relu(x))") == 10
  assert table.index("eq11_1(x)") == 11  # an equivalent's name finds its entry
  assert table.index("add(unary10(x), relu(x))") == 10  # whitespace does not matter
  with pytest.raises(KeyError, match="close matches: add\\(unary10"):
    table.index("add(unary10(x),relu(y))")
  np.testing.assert_array_equal(table.accuracy("val"), table.metrics["Validation Accuracy"])
  np.testing.assert_array_equal(table.accuracy("Test"), table.metrics["Test Accuracy"])
  assert table.classes()[11] == ["add(unary11(x),relu(x))", "eq11_0(x)", "eq11_1(x)"]
  part = table.subset([11, 3])
  assert part.names == [table.names[11], table.names[3]]
  np.testing.assert_array_equal(part.fisher, table.fisher[[11, 3]])
  mask = table.subset(np.arange(len(table)) < 2)
  assert mask.names == table.names[:2]
  with pytest.raises(tables.BenchmarkError, match="inconsistent"):
    tables.Table(["a(x)"], [[]], {"Train Accuracy": np.zeros(2)}, np.zeros((1, 3)))


def test_cache_serves_later_loads_and_rebuilds(entries, source, tmp_path, monkeypatch, caplog):
  cache_dir = tmp_path / "cache"
  expected = tables.read(source)
  _assert_tables_equal(tables.load(source, cache_dir=cache_dir), expected)
  cached = cache_module.cache_path(source, str(cache_dir))
  assert os.path.exists(cached)
  real_read = cache_module.read_hashed

  def fail(*args, **kwargs):
    raise AssertionError("the JSON was parsed again")

  monkeypatch.setattr(cache_module, "read_hashed", fail)
  _assert_tables_equal(tables.load(source, cache_dir=cache_dir), expected)

  # A modified source is parsed again, never served from the old columns.
  entries["add(unary10(x),relu(x))"]["Train Accuracy"] = 0.125
  _dump(entries, source)
  os.utime(source, ns=(1, 1))
  with pytest.raises(AssertionError, match="parsed again"):
    tables.load(source, cache_dir=cache_dir)
  monkeypatch.setattr(cache_module, "read_hashed", real_read)
  with caplog.at_level("INFO", logger="actbench.tables.cache"):
    assert tables.load(source, cache_dir=cache_dir).metrics["Train Accuracy"][10] == 0.125
  assert "stale" in caplog.text
  with np.load(cached) as arrays:
    meta = json.loads(arrays["meta"].tobytes())
  with open(source, "rb") as f:
    assert meta["sha256"] == hashlib.sha256(f.read()).hexdigest()

  # A corrupt cache file is rebuilt.
  for damage in (b"not a zip file", open(cached, "rb").read()[:1000]):
    with open(cached, "wb") as f:
      f.write(damage)
    caplog.clear()
    with caplog.at_level("INFO", logger="actbench.tables.cache"):
      assert tables.load(source, cache_dir=cache_dir).metrics["Train Accuracy"][10] == 0.125
    assert "unreadable" in caplog.text
    monkeypatch.setattr(cache_module, "read_hashed", fail)
    assert tables.load(source, cache_dir=cache_dir).names == expected.names
    monkeypatch.setattr(cache_module, "read_hashed", real_read)


def test_load_by_published_name(source, tmp_path, monkeypatch):
  cache_dir = tmp_path / "cache"
  os.makedirs(cache_dir)
  os.replace(source, download_module.published_path("cnn", cache_dir))
  assert tables.load("act-bench-cnn", cache_dir=cache_dir).names[5] == "add(unary5(x),relu(x))"
  monkeypatch.setenv("ACTBENCH_CACHE", str(cache_dir))
  assert len(tables.load("CNN")) == 50
  with pytest.raises(tables.BenchmarkError, match=r"download\('vit'\)"):
    tables.load("vit", cache_dir=cache_dir)
  with pytest.raises(tables.BenchmarkError, match="no such file"):
    tables.load(tmp_path / "missing.json", cache_dir=cache_dir)


def _serve(payload: bytes, length: int | None = None, announce: bool = True):
  """A stand-in for urllib.request.urlopen that serves `payload` and counts its calls."""
  calls = []

  def urlopen(request, timeout=None):
    calls.append(request.full_url)
    headers = email.message.Message()
    if announce:
      headers["Content-Length"] = str(len(payload) if length is None else length)
    return urllib.response.addinfourl(io.BytesIO(payload), headers, request.full_url, 200)

  return urlopen, calls


def test_download_writes_file_and_checksum(tmp_path, monkeypatch):
  payload = json.dumps(_entries(5)).encode()
  urlopen, calls = _serve(payload)
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  path = tables.download("resnet", cache_dir=tmp_path, progress=False)
  assert calls == [tables.BENCHMARKS["resnet"]]
  assert path == str(tmp_path / "act-bench-resnet.json")
  with open(path, "rb") as f:
    assert f.read() == payload
  with open(download_module.sidecar_path(path), encoding="utf-8") as f:
    record = json.load(f)
  assert record["sha256"] == hashlib.sha256(payload).hexdigest()
  assert record["url"] == tables.BENCHMARKS["resnet"] and record["bytes"] == len(payload)
  assert tables.download("act-bench-resnet", cache_dir=tmp_path) == path
  assert len(calls) == 1  # the second call found the file
  assert tables.load("resnet", cache_dir=tmp_path).names == list(_entries(5))


def test_download_failures_name_the_url(tmp_path, monkeypatch):
  def offline(request, timeout=None):
    raise urllib.error.URLError("no network")

  monkeypatch.setattr(urllib.request, "urlopen", offline)
  with pytest.raises(tables.DownloadError) as error:
    tables.download("vit", cache_dir=tmp_path, progress=False)
  message = str(error.value)
  assert tables.BENCHMARKS["vit"] in message and "no network" in message
  assert str(tmp_path / "act-bench-vit.json") in message
  assert os.listdir(tmp_path) == []

  urlopen, _ = _serve(b'{"a(x)": {}}', length=100)  # the connection drops early
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  with pytest.raises(tables.DownloadError, match="12 of 100 bytes"):
    tables.download("vit", cache_dir=tmp_path, progress=False)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="unknown benchmark"):
    tables.download("mlp", cache_dir=tmp_path)


def test_download_records_a_file_placed_by_hand(tmp_path, monkeypatch):
  monkeypatch.setattr(urllib.request, "urlopen", None)  # any network use would fail
  path = download_module.published_path("cnn", tmp_path)
  with open(path, "wb") as f:
    f.write(b"{}")
  assert tables.download("cnn", cache_dir=tmp_path) == path
  with open(download_module.sidecar_path(path), encoding="utf-8") as f:
    record = json.load(f)
  assert record["sha256"] == hashlib.sha256(b"{}").hexdigest() and record["bytes"] == 2
  with open(download_module.sidecar_path(path), "w", encoding="utf-8") as f:
    f.write("{")
  with pytest.raises(tables.DownloadError, match="download.json is unreadable") as error:
    tables.download("cnn", cache_dir=tmp_path)
  assert "delete it" in str(error.value)


def _published(payload: bytes, monkeypatch, **options) -> Server:
  """A local server standing in for the published Act-Bench-CNN."""
  server = Server(payload, **options)
  monkeypatch.setitem(tables.BENCHMARKS, "cnn", server.url)
  monkeypatch.setattr(download_module, "_checked", {})
  return server


def _sidecar(path) -> dict:
  with open(download_module.sidecar_path(path), encoding="utf-8") as f:
    return json.load(f)


def test_two_processes_download_a_table_once(tmp_path, monkeypatch):
  payload = json.dumps(_entries(20)).encode()
  server = _published(payload, monkeypatch)
  path = download_module.published_path("cnn", tmp_path)
  task = lambda: tables.download("cnn", cache_dir=tmp_path, progress=False)
  assert at_once(task, server, path) == [(False, path), (False, path)]  # both before the file
  assert server.requests == [None] and server.sent == len(payload)
  with open(path, "rb") as f:
    assert f.read() == payload
  record = _sidecar(path)
  assert record["sha256"] == hashlib.sha256(payload).hexdigest()
  assert record["bytes"] == len(payload) and record["url"] == server.url
  assert sorted(os.listdir(tmp_path)) == ["act-bench-cnn.json", "act-bench-cnn.json.download.json"]


def test_a_table_unlike_the_announced_size_is_refused(tmp_path, monkeypatch):
  payload = json.dumps(_entries(5)).encode()

  def grow(part):
    with open(part, "ab") as f:
      f.write(b" ")

  with _published(payload, monkeypatch) as server:
    damage_after_streaming(monkeypatch, grow)
    with pytest.raises(tables.DownloadError, match=(
        f"it has {len(payload) + 1:,} bytes on disk, but the server announced "
        f"{len(payload):,}")) as error:
      tables.download("cnn", cache_dir=tmp_path, progress=False)
  assert server.url in str(error.value)
  assert os.listdir(tmp_path) == []  # neither the file nor a sidecar


def test_a_table_whose_size_the_server_does_not_announce_is_refused(tmp_path, monkeypatch):
  urlopen, _ = _serve(b"{}", announce=False)
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  with pytest.raises(tables.DownloadError, match="did not announce the file's size"):
    tables.download("cnn", cache_dir=tmp_path, progress=False)
  assert os.listdir(tmp_path) == []


def test_a_table_changed_after_download_is_refused(tmp_path, monkeypatch):
  payload = json.dumps(_entries(5)).encode()
  path = download_module.published_path("cnn", tmp_path)
  good = hashlib.sha256(payload).hexdigest()
  changed = bytearray(payload)
  changed[10] ^= 1
  changed = hashlib.sha256(bytes(changed)).hexdigest()
  get = lambda: tables.download("cnn", cache_dir=tmp_path, progress=False)

  def refused(match: str) -> str:
    with pytest.raises(tables.DownloadError, match=match) as error:
      get()
    message = str(error.value)
    assert path in message and "delete it" in message and "download('cnn')" in message
    os.remove(path)  # as the message says: the next call fetches it again
    return message

  with _published(payload, monkeypatch) as server:
    get()
    with open(path, "ab") as f:
      f.write(b" ")
    refused(f"it has {len(payload) + 1:,} bytes, {len(payload):,} when downloaded")

    get()  # the same size, a new mtime: hashed again, although checked in this process
    mtime = os.stat(path).st_mtime_ns
    flip_byte(path, at=10)
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert f"its sha256 is {changed}, {good} when downloaded" in refused("its sha256 is")

    get()  # the same size and mtime, in a process that has not checked it yet
    mtime = os.stat(path).st_mtime_ns
    flip_byte(path, at=10)
    os.utime(path, ns=(mtime, mtime))
    download_module._checked.clear()  # pylint: disable=protected-access
    assert f"its sha256 is {changed}, {good} when downloaded" in refused("its sha256 is")

    assert get() == path
  assert server.requests == [None] * 4
  with open(path, "rb") as f:
    assert f.read() == payload


def test_an_unchanged_table_is_hashed_once_per_process(tmp_path, monkeypatch):
  payload = json.dumps(_entries(5)).encode()
  hashed = []  # the files read whole to hash them
  for name in ("sha256_file", "_read_back"):
    read = getattr(fetch, name)
    monkeypatch.setattr(fetch, name, lambda p, read=read: hashed.append(p) or read(p))
  with _published(payload, monkeypatch):
    path = tables.download("cnn", cache_dir=tmp_path, progress=False)
  assert len(hashed) == 1  # the downloaded file, read back from disk
  assert tables.download("cnn", cache_dir=tmp_path) == path
  assert len(hashed) == 1
  download_module._checked.clear()  # as in a new process  # pylint: disable=protected-access
  assert tables.download("cnn", cache_dir=tmp_path) == path
  assert tables.download("cnn", cache_dir=tmp_path) == path
  assert hashed == [fetch.partial_path(path), path]


def test_pinned_size_and_sha256_are_checked(tmp_path, monkeypatch):
  payload = json.dumps(_entries(5)).encode()
  good = hashlib.sha256(payload).hexdigest()
  path = download_module.published_path("cnn", tmp_path)
  with _published(payload, monkeypatch):
    monkeypatch.setitem(download_module.PUBLISHED, "cnn", (len(payload), "0" * 64))
    with pytest.raises(tables.DownloadError, match=f"is corrupt: its sha256 is {good}, "
                       f"expected {'0' * 64}"):
      tables.download("cnn", cache_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setitem(download_module.PUBLISHED, "cnn", (len(payload), good))
    assert tables.download("cnn", cache_dir=tmp_path, progress=False) == path
  monkeypatch.setitem(download_module.PUBLISHED, "cnn", (len(payload), "1" * 64))
  download_module._checked.clear()  # pylint: disable=protected-access
  with pytest.raises(tables.DownloadError, match=f"the published file has {len(payload):,} and "
                     f"{'1' * 64}"):
    tables.download("cnn", cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch):
  monkeypatch.setenv("ACTBENCH_CACHE", "/somewhere/else")
  assert download_module.default_cache_dir() == "/somewhere/else"
  monkeypatch.delenv("ACTBENCH_CACHE")
  assert download_module.default_cache_dir() == os.path.join(os.path.expanduser("~"),
                                                             ".cache", "actbench")
