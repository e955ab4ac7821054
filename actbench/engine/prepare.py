"""CIFAR-10, CIFAR-100 and Imagenette without TensorFlow: fetch, verify, convert once, read.

`tfds build` needs TensorFlow, which actbench never installs, so these three datasets are
prepared here: the archive TFDS itself uses is fetched (resumably) and checked against the
URL, size and sha256 in the installed tensorflow_datasets package's checksum records (read
as data files; the package is not imported), then converted in one streaming pass over the
tar into files read by index. The conversion keeps what TFDS keeps: CIFAR's pixels (uint8,
HWC) and label (CIFAR-100: the fine label), Imagenette's JPEG files byte for byte (the 160px
variant, `imagenette/160px`) with TFDS's label order. Imagenette has no test split: its
official validation folder is the "test" split here.

    from actbench.engine import prepare
    prepare.prepare("cifar10")                       # once; `python -m actbench.prepare cifar10`
    split = prepare.open_split("cifar10", "train")
    images, labels = split.read(np.arange(128))      # uint8 (128, 32, 32, 3), int32 (128,)

Everything lives under `<data_dir>/actbench/` (data_dir: $TFDS_DATA_DIR or
~/tensorflow_datasets): `downloads/<archive>` (put the archive there by hand when offline) and
one directory per dataset, which appears only when complete (built beside it, then renamed):

    info.json               format version, source URL and sha256, examples per split
    <split>_labels.npy      int32 (N,)
    <split>_images.npy      CIFAR: uint8 (N, 32, 32, 3)
    <split>_images.bin      Imagenette: the JPEG files, concatenated in archive order
    <split>_index.npy       Imagenette: int64 (N, 2), each example's offset and length there
    <split>_files.txt       Imagenette: each example's path in the archive

Examples are in path order: CIFAR's batch files by name, records in file order; Imagenette's
files sorted by their path in the archive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fnmatch
import gzip
import importlib.util
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib

import numpy as np
import tqdm

from actbench import errors, processes
from actbench.engine import fetch, sources

PREPARABLE = ("cifar10", "cifar100", "imagenette")
SPLITS = ("train", "test")
FORMAT_VERSION = 1  # bump when the prepared files change: older directories are rebuilt


class PrepareError(errors.InputError, OSError):
  """A dataset cannot be prepared or read; the message says what is wrong and what to do."""


class _Corrupt(Exception):
  """The archive is readable but not in the official layout."""


@dataclasses.dataclass(frozen=True)
class _Cifar:
  members: dict[str, str]  # path in the archive -> split
  label_bytes: int  # label bytes before each image's 3072 pixel bytes
  label_byte: int  # which of them is TFDS's `label`
  num_classes: int


@dataclasses.dataclass(frozen=True)
class _Source:
  record: str  # TFDS checksum record of the archive, relative to the package
  archive: str  # its file name
  layout: _Cifar | None  # None: Imagenette's folders of JPEG files


_CIFAR10_DIR = "cifar-10-batches-bin/"
_SOURCES = {
    "cifar10": _Source("url_checksums/cifar10.txt", "cifar-10-binary.tar.gz", _Cifar(
        {**{f"{_CIFAR10_DIR}data_batch_{i}.bin": "train" for i in range(1, 6)},
         f"{_CIFAR10_DIR}test_batch.bin": "test"}, 1, 0, 10)),
    "cifar100": _Source("url_checksums/cifar100.txt", "cifar-100-binary.tar.gz", _Cifar(
        {"cifar-100-binary/train.bin": "train", "cifar-100-binary/test.bin": "test"}, 2, 1, 100)),
    "imagenette": _Source("datasets/imagenette/checksums.tsv", "imagenette-160.tgz", None),
}
_IMAGENETTE_ROOT = "imagenette-160"
_IMAGENETTE_SPLITS = {"train": "train", "val": "test"}  # folder -> split
_IMAGENETTE_LABELS = "image_classification/imagenette_labels.txt"  # TFDS's label order
_CIFAR_PIXELS = 32 * 32 * 3

_MANUAL = (
    "ImageNet cannot be downloaded automatically and is not prepared by actbench: place "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual}/, then run\n"
    "  tfds build imagenet2012 --data_dir={data_dir} --file_format=array_record\n"
    "which needs TensorFlow: pip install -e \".[tfds-build]\"")


# ---------------------------------------------------------------- where things are


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, or ~/tensorflow_datasets (TFDS's own default, without importing TFDS)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                         "tensorflow_datasets")


def _root(data_dir) -> str:
  return os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()


def _command(name: str, data_dir=None) -> str:
  """The command that prepares `name` into `data_dir`."""
  where = f" --data_dir={_root(data_dir)}" if data_dir else ""
  return f"python -m actbench.prepare {name}{where}"


def _check_name(name: str, data_dir=None) -> _Source:
  if name == "imagenet2012":
    root = _root(data_dir)
    raise PrepareError(_MANUAL.format(manual=os.path.join(root, "downloads", "manual"),
                                      data_dir=root))
  if name not in _SOURCES:
    raise PrepareError(f"unknown dataset {name!r}; the ones prepared here are "
                       f"{', '.join(PREPARABLE)}")
  return _SOURCES[name]


def prepared_dir(name: str, data_dir=None) -> str:
  """<data_dir>/actbench/<name>: the prepared dataset."""
  _check_name(name, data_dir)
  return os.path.join(_root(data_dir), "actbench", name)


def archive_path(name: str, data_dir=None) -> str:
  """<data_dir>/actbench/downloads/<archive>: where the archive is fetched to, or placed by
  hand (it is then used without the network)."""
  source = _check_name(name, data_dir)
  return os.path.join(_root(data_dir), "actbench", "downloads", source.archive)


def _info(name: str, data_dir=None) -> dict | None:
  try:
    with open(os.path.join(prepared_dir(name, data_dir), "info.json"), encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) else None


def is_prepared(name: str, data_dir=None) -> bool:
  """Whether `name` is prepared in `data_dir`, complete and in the current format."""
  info = _info(name, data_dir)
  return (info is not None and info.get("format") == FORMAT_VERSION and info.get("name") == name
          and sorted(info.get("splits", ())) == sorted(SPLITS))


# ---------------------------------------------------------------- official records


def _tfds_file(relative: str) -> str:
  """A data file of the installed tensorflow_datasets package (found, never imported: importing
  it is slow and pulls in optional TensorFlow machinery)."""
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    raise PrepareError("the tensorflow-datasets package is not installed; it holds the official "
                       "URLs and checksums of the archives: pip install tensorflow-datasets "
                       "(TensorFlow itself is not needed)")
  return os.path.join(next(iter(spec.submodule_search_locations)), relative)


def _read_tfds_file(relative: str) -> str:
  path = _tfds_file(relative)
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise PrepareError(f"cannot read {path} from the installed tensorflow-datasets ({e}); "
                       f"reinstall it: pip install --force-reinstall tensorflow-datasets") from e


def official_source(name: str) -> tuple[str, int, str]:
  """(URL, size in bytes, sha256) of the archive TFDS uses for `name`."""
  source = _check_name(name)
  for line in _read_tfds_file(source.record).splitlines():
    fields = line.split()
    if len(fields) >= 3 and posixpath.basename(fields[0]) == source.archive:
      return fields[0], int(fields[1]), fields[2].lower()
  raise PrepareError(f"no checksum record of {source.archive} in "
                     f"{_tfds_file(source.record)}; reinstall tensorflow-datasets")


def imagenette_labels() -> list[str]:
  """Imagenette's class folders (WordNet ids) in TFDS's label order."""
  return [line.strip() for line in _read_tfds_file(_IMAGENETTE_LABELS).splitlines()
          if line.strip()]


# ---------------------------------------------------------------- conversion


def _member_path(member: tarfile.TarInfo) -> str:
  return posixpath.normpath(member.name).lstrip("/")


def _cifar_records(data: bytes, layout: _Cifar, member: str) -> tuple[np.ndarray, np.ndarray]:
  """One CIFAR binary batch file: uint8 (N, 32, 32, 3) images and int32 (N,) labels."""
  record = layout.label_bytes + _CIFAR_PIXELS
  if not data or len(data) % record:
    raise _Corrupt(f"{member} has {len(data):,} bytes, not a whole number of {record}-byte "
                   f"records")
  rows = np.frombuffer(data, np.uint8).reshape(-1, record)
  labels = rows[:, layout.label_byte].astype(np.int32)
  if labels.max() >= layout.num_classes:
    raise _Corrupt(f"{member} has label {labels.max()}, but there are {layout.num_classes} "
                   f"classes")
  images = rows[:, layout.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def _save_joined(path: str, arrays: list[np.ndarray]):
  """np.save(path, np.concatenate(arrays)) without holding the concatenated copy."""
  header = {"descr": np.lib.format.dtype_to_descr(arrays[0].dtype), "fortran_order": False,
            "shape": (sum(len(a) for a in arrays), *arrays[0].shape[1:])}
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, header)
    f.writelines(np.ascontiguousarray(array).data for array in arrays)


def _convert_cifar(tar: tarfile.TarFile, layout: _Cifar, out: str) -> dict[str, int]:
  parts = {}
  for member in tar:
    path = _member_path(member)
    if member.isfile() and path in layout.members:
      parts[path] = _cifar_records(tar.extractfile(member).read(), layout, path)
  missing = sorted(set(layout.members) - set(parts))
  if missing:
    raise _Corrupt(f"it has no {', '.join(missing)}")
  counts = {}
  for split in SPLITS:
    members = sorted(m for m, s in layout.members.items() if s == split)
    _save_joined(os.path.join(out, f"{split}_images.npy"), [parts[m][0] for m in members])
    _save_joined(os.path.join(out, f"{split}_labels.npy"), [parts[m][1] for m in members])
    counts[split] = sum(len(parts.pop(m)[1]) for m in members)
  return counts


def _imagenette_entry(path: str, label_of: dict[str, int]) -> tuple[str, int] | None:
  """(split, label) of an archive path that is an Imagenette image (as TFDS globs them:
  <root>/<train|val>/<wnid>/*.JPEG), else None."""
  parts = path.split("/")
  if (len(parts) != 4 or parts[0] != _IMAGENETTE_ROOT or parts[1] not in _IMAGENETTE_SPLITS
      or not fnmatch.fnmatchcase(parts[3], "*.JPEG")):
    return None
  if parts[2] not in label_of:
    raise _Corrupt(f"{path} is in a class folder that is not one of TFDS's Imagenette labels")
  return _IMAGENETTE_SPLITS[parts[1]], label_of[parts[2]]


def _convert_imagenette(tar: tarfile.TarFile, out: str) -> dict[str, int]:
  label_of = {wnid: i for i, wnid in enumerate(imagenette_labels())}
  entries = {split: [] for split in SPLITS}  # (path, offset, length, label)
  with contextlib.ExitStack() as stack:
    sinks = {split: stack.enter_context(open(os.path.join(out, f"{split}_images.bin"), "wb"))
             for split in SPLITS}
    for member in tar:
      path = _member_path(member)
      found = _imagenette_entry(path, label_of) if member.isfile() else None
      if found is not None:
        split, label = found
        data = tar.extractfile(member).read()
        entries[split].append((path, sinks[split].tell(), len(data), label))
        sinks[split].write(data)
  counts = {}
  for split, rows in entries.items():
    if not rows:
      folder = next(f for f, s in _IMAGENETTE_SPLITS.items() if s == split)
      raise _Corrupt(f"it has no images under {_IMAGENETTE_ROOT}/{folder}/")
    rows.sort()
    np.save(os.path.join(out, f"{split}_index.npy"), np.array([r[1:3] for r in rows], np.int64))
    np.save(os.path.join(out, f"{split}_labels.npy"), np.array([r[3] for r in rows], np.int32))
    with open(os.path.join(out, f"{split}_files.txt"), "w", encoding="utf-8") as f:
      f.writelines(f"{r[0]}\n" for r in rows)
    counts[split] = len(rows)
  return counts


class _Counted:
  """A file read front to back, counting its bytes on a progress bar."""

  def __init__(self, f, bar: tqdm.tqdm):
    self._f, self._bar = f, bar

  def read(self, size: int = -1) -> bytes:
    data = self._f.read(size)
    self._bar.update(len(data))
    return data


def _convert(name: str, archive: str, out: str, progress: bool) -> dict[str, int]:
  """Streams the tar once (never extracted to disk) into the prepared files in `out`."""
  layout = _SOURCES[name].layout
  with (open(archive, "rb") as f,
        tqdm.tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"converting {name}", disable=not progress) as bar,
        tarfile.open(fileobj=_Counted(f, bar), mode="r|gz") as tar):
    if layout is None:
      return _convert_imagenette(tar, out)
    return _convert_cifar(tar, layout, out)


def _remove_stale(parent: str, name: str):
  """Removes the build directories of killed preparations of `name`.

  Called holding the dataset's lock, so no other preparation is running, on this machine or
  another: every build directory there is a dead one's (process ids say nothing about other
  machines). Without file locks, only those whose process is gone on this machine."""
  pattern = re.compile(rf"\.{re.escape(name)}\.tmp-(\d+)-.*")
  for entry in os.listdir(parent):
    match = pattern.fullmatch(entry)
    if match and (fetch.LOCKING or not processes.pid_alive(int(match.group(1)))):
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _install(build: str, target: str, name: str, data_dir):
  """Renames the complete `build` directory to `target`, replacing an outdated one."""
  if is_prepared(name, data_dir):  # only without file locks can another preparation run
    shutil.rmtree(build)
    return
  if os.path.exists(target):
    old = f"{build}.old"
    os.replace(target, old)
    os.replace(build, target)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(build, target)


def _build(name: str, archive: str, data_dir, record: dict, progress: bool):
  target = prepared_dir(name, data_dir)
  parent = os.path.dirname(target)
  _remove_stale(parent, name)
  build = tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent)
  try:
    counts = _convert(name, archive, build, progress)
    info = {"format": FORMAT_VERSION, "name": name, **record, "splits": counts,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    with open(os.path.join(build, "info.json"), "w", encoding="utf-8") as f:
      json.dump(info, f, indent=1)
    _install(build, target, name, data_dir)
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, _Corrupt) as e:
    raise PrepareError(
        f"{archive} is truncated or corrupt, or not the {name} archive: {e}. Delete it and run "
        f"`{_command(name, data_dir)}` again to download it afresh, or place a good copy "
        f"there") from e
  except PrepareError:
    raise
  except OSError as e:
    raise PrepareError(f"preparing {name} in {parent} failed: {e}") from e
  finally:
    if os.path.exists(build):
      shutil.rmtree(build, ignore_errors=True)


def _fetch_archive(name: str, data_dir, url: str, sha256: str, size: int | None, progress: bool):
  archive = archive_path(name, data_dir)
  try:
    fetch.fetch(url, archive, sha256=sha256, size=size, progress=progress)
  except fetch.ChecksumError as e:
    raise PrepareError(f"cannot prepare {name}: {e}") from e
  except fetch.FetchError as e:
    raise PrepareError(
        f"could not download the {name} archive from {url}: {e.reason}. Without network access, "
        f"fetch that URL on another machine and place the file at {archive}, then run "
        f"`{_command(name, data_dir)}` again (a partial download is resumed)") from e


def prepare(name: str, *, data_dir=None, url: str | None = None, sha256: str | None = None,
            progress: bool = True) -> str:
  """Prepares dataset `name` (one of PREPARABLE) once; returns its directory.

  Does nothing when it is already prepared. Otherwise fetches the official archive (or uses
  the one at `archive_path(name, data_dir)`, placed there by hand), checks its sha256 and
  converts it; an interrupted download resumes on the next call. Processes preparing one
  dataset at once take turns (`fetch.locked` on its directory): the first downloads and
  converts, the others wait and find it prepared. Prints nothing: with `progress`, tqdm bars
  show the download and the conversion.

  Args:
    name: 'cifar10', 'cifar100' or 'imagenette'.
    data_dir: default $TFDS_DATA_DIR, or ~/tensorflow_datasets.
    url: a mirror of the official archive (default: the URL TFDS records).
    sha256: the archive's expected sha256 (default: the one TFDS records, with its size).

  Raises:
    PrepareError: unknown name, no network (the message names the URL and where to place the
      archive by hand), a wrong checksum, a truncated or corrupt archive, a full disk. No
      partly prepared dataset is ever left behind.
  """
  _check_name(name, data_dir)
  target = prepared_dir(name, data_dir)
  if is_prepared(name, data_dir):
    return target
  archive = archive_path(name, data_dir)
  size = None
  if url is None or sha256 is None:
    official_url, official_size, official_sha = official_source(name)
    url = url or official_url
    size, sha256 = (official_size, official_sha) if sha256 is None else (None, sha256)
  with contextlib.ExitStack() as stack:
    try:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      stack.enter_context(fetch.locked(target))
    except OSError as e:
      raise PrepareError(f"cannot prepare {name} in {os.path.dirname(target)}: {e}") from e
    if is_prepared(name, data_dir):  # another process prepared it while this one waited
      return target
    _fetch_archive(name, data_dir, url, sha256, size, progress)
    _build(name, archive, data_dir, {"url": url, "sha256": sha256.lower(),
                                     "archive": os.path.basename(archive)}, progress)
  return target


# ---------------------------------------------------------------- reading


class ArraySplit:
  """A prepared CIFAR split: images memory-mapped from disk, labels in memory."""

  def __init__(self, directory: str, split: str, identity: str = ""):
    self.identity = identity  # what the examples are (the archive's sha256), for data digests
    self.images = np.load(os.path.join(directory, f"{split}_images.npy"), mmap_mode="r")
    self.labels = np.load(os.path.join(directory, f"{split}_labels.npy"))

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, 32, 32, 3) images and int32 (B,) labels of the examples at `indices`."""
    indices = np.asarray(indices, np.int64)
    return np.asarray(self.images[indices]), self.labels[indices]

  def close(self) -> None:
    """Nothing to end: reading a memory map needs no threads."""


class JpegSplit:
  """A prepared Imagenette split: the original JPEG bytes, decoded at read time on a thread
  pool (so any image size works, and JPEG draft mode makes small sizes cheap), which `close`
  ends (a later read starts it again)."""

  def __init__(self, directory: str, split: str, size: int | None, num_threads: int | None,
               identity: str = ""):
    self.identity = identity  # what the examples are (the archive's sha256), for data digests
    self.size = size
    self.labels = np.load(os.path.join(directory, f"{split}_labels.npy"))
    self._index = np.load(os.path.join(directory, f"{split}_index.npy"))
    self._data = np.memmap(os.path.join(directory, f"{split}_images.bin"), np.uint8, "r")
    self._pool = sources.DecodingPool(num_threads or min(16, os.cpu_count() or 1))

  def __len__(self) -> int:
    return len(self.labels)

  def encoded(self, i: int) -> bytes:
    """The JPEG file of example `i`, exactly as in the archive."""
    offset, length = self._index[i]
    return self._data[offset:offset + length].tobytes()

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, size, size, 3) images (size=None: originals, which only stack when they are
    all one shape) and int32 (B,) labels of the examples at `indices`."""
    indices = np.asarray(indices, np.int64)
    if not len(indices):
      side = self.size or 0
      return np.zeros((0, side, side, 3), np.uint8), self.labels[indices]
    images = self._pool.map(lambda i: sources.decode_image(self.encoded(i), self.size), indices)
    return np.stack(images), self.labels[indices]

  def close(self) -> None:
    self._pool.close()


def open_split(name: str, split: str, data_dir=None, *, image_size: int | None = None,
               num_threads: int | None = None) -> ArraySplit | JpegSplit:
  """A prepared split ('train' or 'test'; Imagenette's 'test' is its validation folder),
  read by index. image_size (Imagenette only): shorter side resized to it, centre crop;
  num_threads: JPEG decoding threads (default min(16, cpu count))."""
  _check_name(name, data_dir)
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not is_prepared(name, data_dir):
    raise PrepareError(f"{name} is not prepared in {_root(data_dir)}: run once\n"
                       f"  {_command(name, data_dir)}")
  directory = prepared_dir(name, data_dir)
  identity = f"prepared:{name}:{_info(name, data_dir)['sha256']}:{split}"
  if _SOURCES[name].layout is None:
    return JpegSplit(directory, split, image_size, num_threads, identity)
  if image_size is not None:
    raise ValueError(f"{name} images are 32x32; image_size applies to imagenette")
  return ArraySplit(directory, split, identity)
