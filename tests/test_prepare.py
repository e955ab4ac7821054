"""actbench.engine.prepare and `python -m actbench.prepare`: archives fabricated in the official
layouts, served from a path, a file:// URL and a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

from actbench import prepare as cli
from actbench.engine import prepare, sources
from tests.test_fetch import OFFLINE_URL, Server, at_once

# The label order of TFDS's imagenette (its ClassLabel names file), written out independently.
IMAGENETTE_WNIDS = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]


def _tar_gz(path, members: dict[str, bytes], order: list[str]) -> str:
  """A .tar.gz holding `members` in the given order (a folder entry first, as in the real ones)."""
  with tarfile.open(path, "w:gz") as tar:
    folder = tarfile.TarInfo(order[0].split("/")[0])
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)
    for name in order:
      info = tarfile.TarInfo(name)
      info.size = len(members[name])
      tar.addfile(info, io.BytesIO(members[name]))
  return str(path)


def _cifar(path, name: str, counts: dict[str, int], seed: int = 0):
  """A CIFAR binary archive (cifar-10-binary.tar.gz or cifar-100-binary.tar.gz layout) with
  counts[member] random images per batch file; returns (path, {split: (images, labels)}),
  the images uint8 HWC and labels as generated (CIFAR-100: the fine labels)."""
  rng = np.random.default_rng(seed)
  members, expected = {}, {"train": ([], []), "test": ([], [])}
  for member in sorted(counts):  # the splits' example order: batch files by name
    n = counts[member]
    images = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10 if name == "cifar10" else 100, n).astype(np.uint8)
    heads = [labels] if name == "cifar10" else [rng.integers(0, 20, n).astype(np.uint8), labels]
    pixels = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # the format stores CHW
    members[member] = np.concatenate([np.stack(heads, 1), pixels], 1).tobytes()
    split = "test" if "test" in member else "train"
    expected[split][0].append(images)
    expected[split][1].append(labels.astype(np.int32))
  folder = member.split("/")[0]
  members[f"{folder}/readme.html"] = b"<html>not data</html>"
  order = list(rng.permutation(sorted(members)))  # not the splits' order
  expected = {split: (np.concatenate(images), np.concatenate(labels))
              for split, (images, labels) in expected.items() if labels}
  return _tar_gz(path, members, order), expected


def _cifar10(path, per_batch=(3, 2, 4, 1, 2), test=5, seed=0):
  counts = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": n for i, n in enumerate(per_batch)}
  return _cifar(path, "cifar10", {**counts, "cifar-10-batches-bin/test_batch.bin": test}, seed)


def _jpeg(rng, mode: str) -> bytes:
  width, height = (int(s) for s in rng.integers(9, 48, 2))
  pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=int(rng.integers(50, 95)))
  return buffer.getvalue()


def _imagenette(path, seed=0):
  """An imagenette-160.tgz of small real JPEGs of varying sizes (some grayscale) in three
  classes; returns (path, {split: [(archive path, bytes, label)] in path order})."""
  rng = np.random.default_rng(seed)
  members, expected = {}, {"train": [], "test": []}
  for folder, split in (("train", "train"), ("val", "test")):
    for label in (9, 0, 4):
      wnid = IMAGENETTE_WNIDS[label]
      for _ in range(3 if split == "train" else 2):
        name = f"imagenette-160/{folder}/{wnid}/{wnid}_{rng.integers(10**6)}.JPEG"
        members[name] = _jpeg(rng, "L" if rng.random() < 0.3 else "RGB")
        expected[split].append((name, members[name], label))
  members["imagenette-160/train/n01440764/notes.txt"] = b"not an image"  # TFDS globs *.JPEG
  members["imagenette-160/readme.md"] = b"# imagenette"
  order = list(rng.permutation(sorted(members)))
  return _tar_gz(path, members, order), {s: sorted(e) for s, e in expected.items()}


def _resized(data: bytes, size: int) -> np.ndarray:
  """An image's shorter side resized to `size` (bilinear) and its centre `size` square, by PIL
  alone: what reading a prepared Imagenette split at image_size=size must give."""
  image = Image.open(io.BytesIO(data)).convert("RGB")
  scale = size / min(image.size)
  width, height = (max(size, round(side * scale)) for side in image.size)
  left, top = (width - size) // 2, (height - size) // 2
  image = image.resize((width, height), Image.Resampling.BILINEAR)
  return np.asarray(image.crop((left, top, left + size, top + size)))


def _decoding_threads() -> set[threading.Thread]:
  return {t for t in threading.enumerate() if t.name.startswith(sources.DecodingPool.THREAD_NAME)}


def _sha(path) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _leftovers(data_dir) -> list[str]:
  """What a failed preparation left in <data_dir>/actbench besides the downloads folder."""
  root = os.path.join(data_dir, "actbench")
  return sorted(set(os.listdir(root)) - {"downloads"}) if os.path.exists(root) else []


def _assert_cifar(name, data_dir, expected):
  for split, (images, labels) in expected.items():
    source = prepare.open_split(name, split, data_dir)
    assert len(source) == len(labels)
    got_images, got_labels = source.read(np.arange(len(labels)))
    assert got_images.dtype == np.uint8 and got_images.shape == images.shape
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_labels, labels)
    picked = np.array([len(labels) - 1, 0, 2])
    np.testing.assert_array_equal(source.read(picked)[0], images[picked])
    np.testing.assert_array_equal(source.read(picked)[1], labels[picked])


@pytest.fixture(name="no_network")
def fixture_no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("the network was used")
  monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_official_records_and_labels_come_from_the_installed_tfds():
  # In a fresh interpreter: reading the records must not import tensorflow_datasets.
  code = ("import sys; from actbench.engine import prepare as p; "
          "print(p.official_source('cifar10')); print(p.official_source('cifar100')); "
          "print(p.official_source('imagenette')); print(p.imagenette_labels()); "
          "print('tensorflow_datasets' in sys.modules)")
  lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.splitlines()
  assert lines[0] == str(("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", 170052171,
                          "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"))
  assert lines[1] == str(("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", 168513733,
                          "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"))
  assert lines[2] == str(("https://s3.amazonaws.com/fast-ai-imageclas/imagenette-160.tgz",
                          98752094,
                          "4bacf19aa3f2454e330ac366c98ac1e470ccc6bebca8ff63ecc7f339cb2ead11"))
  assert lines[3] == str(IMAGENETTE_WNIDS)
  assert lines[4] == "False"


def test_paths(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
  assert prepare.default_data_dir() == str(tmp_path / "env")
  assert prepare.prepared_dir("cifar10") == str(tmp_path / "env" / "actbench" / "cifar10")
  assert prepare.archive_path("imagenette", tmp_path) == str(
      tmp_path / "actbench" / "downloads" / "imagenette-160.tgz")
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert prepare.default_data_dir() == os.path.join(os.path.expanduser("~"),
                                                    "tensorflow_datasets")
  with pytest.raises(prepare.PrepareError, match="unknown dataset 'mnist'.*cifar10, cifar100, "
                     "imagenette"):
    prepare.prepared_dir("mnist")


def test_cifar10_from_a_file_url_is_pixel_exact(tmp_path):
  archive, expected = _cifar10(tmp_path / "cifar-10-binary.tar.gz")
  data_dir = tmp_path / "data"
  assert not prepare.is_prepared("cifar10", data_dir)
  directory = prepare.prepare("cifar10", data_dir=data_dir, url=f"file://{archive}",
                              sha256=_sha(archive), progress=False)
  assert directory == prepare.prepared_dir("cifar10", data_dir)
  assert prepare.is_prepared("cifar10", data_dir)
  _assert_cifar("cifar10", data_dir, expected)
  with open(os.path.join(directory, "info.json"), encoding="utf-8") as f:
    info = json.load(f)
  assert info["splits"] == {"train": 12, "test": 5} and info["sha256"] == _sha(archive)
  assert info["url"] == f"file://{archive}" and info["format"] == prepare.FORMAT_VERSION
  with open(prepare.archive_path("cifar10", data_dir), "rb") as f, open(archive, "rb") as g:
    assert f.read() == g.read()  # the archive is kept where a hand-placed one would go
  assert _leftovers(data_dir) == ["cifar10"]


def test_cifar100_uses_the_fine_label(tmp_path, no_network):
  counts = {"cifar-100-binary/train.bin": 9, "cifar-100-binary/test.bin": 4}
  archive, expected = _cifar(tmp_path / "c100.tar.gz", "cifar100", counts, seed=1)
  data_dir = tmp_path / "data"
  os.makedirs(os.path.dirname(prepare.archive_path("cifar100", data_dir)))
  os.replace(archive, prepare.archive_path("cifar100", data_dir))  # placed by hand
  prepare.prepare("cifar100", data_dir=data_dir,
                  sha256=_sha(prepare.archive_path("cifar100", data_dir)), progress=False)
  _assert_cifar("cifar100", data_dir, expected)


def test_imagenette_keeps_the_jpeg_bytes_and_tfds_labels(tmp_path, no_network):
  archive, expected = _imagenette(tmp_path / "nette.tgz")
  data_dir = tmp_path / "data"
  os.makedirs(os.path.dirname(prepare.archive_path("imagenette", data_dir)))
  os.replace(archive, prepare.archive_path("imagenette", data_dir))
  prepare.prepare("imagenette", data_dir=data_dir,
                  sha256=_sha(prepare.archive_path("imagenette", data_dir)), progress=False)
  threads = _decoding_threads()
  for split, examples in expected.items():
    # Images are at most 47 pixels a side: at sizes above half of that, JPEG draft mode decodes
    # at full scale, so PIL's full decode is the exact reference (draft's reduced-scale
    # decoding is compared with a full resize in test_data.py).
    for size in (None, 24, 31):
      source = prepare.open_split("imagenette", split, data_dir, image_size=size, num_threads=2)
      assert len(source) == len(examples)
      assert [source.encoded(i) for i in range(len(source))] == [e[1] for e in examples]
      np.testing.assert_array_equal(source.labels, [e[2] for e in examples])
      if size is None:  # originals have various sizes: one at a time
        for i, (_, data, label) in enumerate(examples):
          image, labels = source.read(np.array([i]))
          reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
          np.testing.assert_array_equal(image[0], reference)
          assert labels.tolist() == [label]
        source.close()
        continue
      order = np.array([3, 0, len(examples) - 1, 1])
      images, labels = source.read(order)
      assert images.shape == (4, size, size, 3) and images.dtype == np.uint8
      for image, i in zip(images, order):
        np.testing.assert_array_equal(image, _resized(examples[i][1], size))
      assert labels.dtype == np.int32 and labels.tolist() == [examples[i][2] for i in order]
      assert len(_decoding_threads() - threads) <= 2
      source.close()  # its 2 decoding threads end; reading starts them again
      assert _decoding_threads() == threads
      np.testing.assert_array_equal(source.read(order[:1])[0][0], images[0])
      source.close()
  with open(os.path.join(prepare.prepared_dir("imagenette", data_dir), "train_files.txt"),
            encoding="utf-8") as f:
    assert f.read().split() == [e[0] for e in expected["train"]]


def test_prepare_is_idempotent_and_rebuilds_an_old_format(tmp_path, monkeypatch):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", seed=2)
  data_dir = tmp_path / "data"
  prepare.prepare("cifar10", data_dir=data_dir, url=f"file://{archive}", sha256=_sha(archive),
                  progress=False)
  os.remove(archive)
  monkeypatch.setattr(urllib.request, "urlopen", None)
  calls = []
  monkeypatch.setattr(prepare, "_convert", lambda *a: calls.append(a))
  assert prepare.prepare("cifar10", data_dir=data_dir, progress=False) == (
      prepare.prepared_dir("cifar10", data_dir))
  assert not calls  # prepared: neither fetched nor converted again
  monkeypatch.undo()
  info_path = os.path.join(prepare.prepared_dir("cifar10", data_dir), "info.json")
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  with open(info_path, "w", encoding="utf-8") as f:
    json.dump({**info, "format": 0}, f)
  assert not prepare.is_prepared("cifar10", data_dir)
  stale = os.path.join(data_dir, "actbench", ".cifar10.tmp-999999999-abc")  # a killed build
  os.makedirs(stale)
  prepare.prepare("cifar10", data_dir=data_dir, sha256=info["sha256"], progress=False)
  assert prepare.is_prepared("cifar10", data_dir)
  _assert_cifar("cifar10", data_dir, expected)
  assert _leftovers(data_dir) == ["cifar10"]


def test_wrong_checksum(tmp_path):
  archive, _ = _cifar10(tmp_path / "c10.tar.gz")
  data_dir = tmp_path / "data"
  with pytest.raises(prepare.PrepareError, match="sha256 is") as error:
    prepare.prepare("cifar10", data_dir=data_dir, url=f"file://{archive}", sha256="0" * 64,
                    progress=False)
  assert f"file://{archive}" in str(error.value) and "0" * 64 in str(error.value)
  assert not prepare.is_prepared("cifar10", data_dir)
  assert os.listdir(os.path.join(data_dir, "actbench", "downloads")) == []  # deleted
  assert _leftovers(data_dir) == []
  # A hand-placed archive with the wrong checksum is named, and kept for the user.
  os.replace(archive, prepare.archive_path("cifar10", data_dir))
  with pytest.raises(prepare.PrepareError, match="Remove it") as error:
    prepare.prepare("cifar10", data_dir=data_dir, sha256="0" * 64, progress=False)
  assert prepare.archive_path("cifar10", data_dir) in str(error.value)
  assert os.path.exists(prepare.archive_path("cifar10", data_dir))
  assert _leftovers(data_dir) == []


@pytest.mark.parametrize("cut", [0.2, 0.6, 0.97])
def test_truncated_archive(tmp_path, cut):
  archive, _ = _cifar10(tmp_path / "c10.tar.gz", per_batch=(40, 40, 40, 40, 40), test=40)
  with open(archive, "rb") as f:
    data = f.read()
  truncated = tmp_path / "cut.tar.gz"
  truncated.write_bytes(data[:int(len(data) * cut)])
  data_dir = tmp_path / "data"
  # Its checksum matches (a mirror's damaged copy): the conversion finds it truncated.
  with pytest.raises(prepare.PrepareError, match="truncated or corrupt") as error:
    prepare.prepare("cifar10", data_dir=data_dir, url=truncated.as_uri(),
                    sha256=_sha(truncated), progress=False)
  assert prepare.archive_path("cifar10", data_dir) in str(error.value)
  assert "Delete it" in str(error.value)
  assert not prepare.is_prepared("cifar10", data_dir)
  assert _leftovers(data_dir) == []
  # With the full archive's checksum, the download itself is rejected.
  with pytest.raises(prepare.PrepareError, match="sha256 is"):
    prepare.prepare("cifar10", data_dir=tmp_path / "other", url=truncated.as_uri(),
                    sha256=_sha(archive), progress=False)
  assert _leftovers(tmp_path / "other") == []


def test_archive_missing_a_batch(tmp_path):
  archive, _ = _cifar(tmp_path / "c10.tar.gz", "cifar10",
                      {f"cifar-10-batches-bin/data_batch_{i}.bin": 2 for i in range(1, 6)})
  data_dir = tmp_path / "data"
  with pytest.raises(prepare.PrepareError, match="has no cifar-10-batches-bin/test_batch.bin"):
    prepare.prepare("cifar10", data_dir=data_dir, url=f"file://{archive}",
                    sha256=_sha(archive), progress=False)
  assert _leftovers(data_dir) == []


def _broken_download(data_dir, content: bytes) -> str:
  """The .part file a broken download of the cifar10 archive left, holding `content`."""
  part = f"{prepare.archive_path('cifar10', data_dir)}.part"
  os.makedirs(os.path.dirname(part))
  with open(part, "wb") as f:
    f.write(content)
  return part


def test_download_resumes_over_http(tmp_path):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", per_batch=(20, 20, 20, 20, 20), test=20)
  with open(archive, "rb") as f:
    payload = f.read()
  data_dir = tmp_path / "data"
  part = _broken_download(data_dir, payload[:len(payload) // 3])  # broken a third of the way
  with Server(payload) as server:
    prepare.prepare("cifar10", data_dir=data_dir, url=server.url, sha256=_sha(archive),
                    progress=False)
  assert server.requests == [f"bytes={len(payload) // 3}-"]
  assert server.sent == len(payload) - len(payload) // 3
  with open(prepare.archive_path("cifar10", data_dir), "rb") as f:
    assert f.read() == payload
  _assert_cifar("cifar10", data_dir, expected)
  assert not os.path.exists(part)


def test_a_server_ignoring_range_restarts_cleanly(tmp_path):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", seed=3)
  with open(archive, "rb") as f:
    payload = f.read()
  data_dir = tmp_path / "data"
  _broken_download(data_dir, b"\xff" * 1000)
  with Server(payload, ranges=False) as server:
    prepare.prepare("cifar10", data_dir=data_dir, url=server.url, sha256=_sha(archive),
                    progress=False)
  assert server.sent == len(payload)
  _assert_cifar("cifar10", data_dir, expected)


def test_two_processes_preparing_one_dataset_download_and_convert_it_once(tmp_path,
                                                                          monkeypatch):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", per_batch=(20, 20, 20, 20, 20), test=20)
  with open(archive, "rb") as f:
    payload = f.read()
  data_dir = tmp_path / "data"
  conversions = tmp_path / "conversions.txt"
  convert = prepare._convert  # pylint: disable=protected-access

  def counted(*args):
    with open(conversions, "a", encoding="utf-8") as f:
      f.write(f"{os.getpid()}\n")
    return convert(*args)

  monkeypatch.setattr(prepare, "_convert", counted)  # the forked processes inherit it
  server = Server(payload)

  def task():
    return prepare.prepare("cifar10", data_dir=data_dir, url=server.url, sha256=_sha(archive),
                           progress=False)

  target = prepare.prepared_dir("cifar10", data_dir)
  assert at_once(task, server, target) == [(False, target)] * 2  # both before it was prepared
  assert server.requests == [None] and server.sent == len(payload)
  assert len(conversions.read_text().split()) == 1
  _assert_cifar("cifar10", data_dir, expected)
  assert _leftovers(data_dir) == ["cifar10"]  # no lock file, no build directory
  assert os.listdir(os.path.dirname(prepare.archive_path("cifar10", data_dir))) == [
      "cifar-10-binary.tar.gz"]


def test_holding_the_lock_removes_any_build_directory_left(tmp_path):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", seed=5)
  data_dir = tmp_path / "data"
  # Left by a process of another machine sharing data_dir: its id may be a live one here.
  left = os.path.join(data_dir, "actbench", f".cifar10.tmp-{os.getpid()}-abc")
  os.makedirs(left)
  prepare.prepare("cifar10", data_dir=data_dir, url=f"file://{archive}", sha256=_sha(archive),
                  progress=False)
  _assert_cifar("cifar10", data_dir, expected)
  assert _leftovers(data_dir) == ["cifar10"]


def test_offline_names_the_url_and_where_to_put_the_archive(tmp_path):
  data_dir = tmp_path / "data"
  with pytest.raises(prepare.PrepareError) as error:
    prepare.prepare("imagenette", data_dir=data_dir, url=OFFLINE_URL, progress=False)
  message = str(error.value)
  assert OFFLINE_URL in message and prepare.archive_path("imagenette", data_dir) in message
  assert "python -m actbench.prepare imagenette" in message
  assert _leftovers(data_dir) == []
  with pytest.raises(prepare.PrepareError, match="(?s)not prepared.*python -m actbench.prepare "
                     "imagenette --data_dir="):
    prepare.open_split("imagenette", "train", data_dir)


def test_imagenet_is_manual(tmp_path):
  with pytest.raises(prepare.PrepareError, match="tfds build imagenet2012") as error:
    prepare.prepare("imagenet2012", data_dir=tmp_path)
  assert os.path.join(str(tmp_path), "downloads", "manual") in str(error.value)
  assert 'pip install -e ".[tfds-build]"' in str(error.value)


def test_command_line(tmp_path, capsys):
  archive, expected = _cifar10(tmp_path / "c10.tar.gz", seed=4)
  data_dir = str(tmp_path / "data")
  assert cli.main(["cifar10", f"--data_dir={data_dir}", f"--url=file://{archive}",
                   f"--sha256={_sha(archive)}"]) == 0
  out = capsys.readouterr().out
  assert prepare.prepared_dir("cifar10", data_dir) in out
  assert f"--config.dataset.data_dir={data_dir}" in out
  _assert_cifar("cifar10", data_dir, expected)
  assert cli.main(["imagenet2012", f"--data_dir={data_dir}"]) == 1
  assert "tfds build imagenet2012" in capsys.readouterr().err
  assert cli.main(["cifar100", f"--data_dir={data_dir}", f"--url={OFFLINE_URL}"]) == 1
  err = capsys.readouterr().err
  assert OFFLINE_URL in err and prepare.archive_path("cifar100", data_dir) in err


def test_command_line_unknown_name():
  result = subprocess.run([sys.executable, "-m", "actbench.prepare", "bogus"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [(
      "unknown dataset 'bogus'; choose one of cifar10, cifar100, imagenette (imagenet2012 is "
      "prepared by hand)")]


@pytest.mark.slow
def test_first_use_prepares_and_the_cnn_smoke_config_trains_from_the_files(tmp_path,
                                                                             monkeypatch):
  from actbench.engine import data, train  # pylint: disable=import-outside-toplevel
  from configs import cnn  # pylint: disable=import-outside-toplevel
  archive, expected = _cifar10(tmp_path / "cifar-10-binary.tar.gz", per_batch=(8, 6, 6, 2, 2),
                               test=8)
  monkeypatch.setattr(prepare, "official_source", lambda name: (
      f"file://{archive}", os.path.getsize(archive), _sha(archive)))
  data_dir = tmp_path / "data"
  with pytest.raises(data.DatasetNotFoundError, match="python -m actbench.prepare cifar10"):
    data.load("cifar10", data_dir=data_dir, download=False)
  assert not prepare.is_prepared("cifar10", data_dir)
  config = cnn.get_config("smoke")
  config.dataset.data_dir = str(data_dir)
  result = train.train_population(config, ["relu(x)", "tanh(x)"], [0])  # prepares first
  assert prepare.is_prepared("cifar10", data_dir) and result.diverged == [False, False]
  for name in ("train_loss", "validation_loss", "test_loss", "test_accuracy"):
    assert np.all(np.isfinite(result.metrics[name])), name
  dataset = train.load_dataset(config)
  assert (dataset.info.num_train, dataset.info.num_validation, dataset.info.num_test) == (16, 8, 8)
  images, labels = expected["train"]
  batch = dataset.train.gather(np.arange(16))
  np.testing.assert_array_equal(batch["image"], images[dataset.train.source_indices])
  np.testing.assert_array_equal(batch["label"], labels[dataset.train.source_indices])
