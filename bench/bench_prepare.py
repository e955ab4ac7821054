"""Speed and memory of preparing a dataset (actbench.engine.prepare) from a full-size archive.

    python -m bench.bench_prepare                    # CIFAR-10: 50,000 + 10,000 images
    python -m bench.bench_prepare --train 5000       # a quick run
    python -m bench.bench_prepare --dataset=imagenette --keep=/tmp/data   # 9,469 + 3,925 JPEGs

Fabricates the archive in the official layout (cifar10, cifar100: random 8x8 blocks with a
little noise, which compress about as well as the real photographs, to 90% against 92.5%, so
gzip works as hard; imagenette: JPEGs of such blocks, 160 pixels on the shorter side). The
archive is placed where a hand-placed one goes, then, each in a fresh process so that its peak
memory (VmHWM) is its own: `prepare` (sha256 of the archive, one streaming pass over the tar,
the prepared files) and a shuffled epoch of `open_split(...).read` in batches of 256 (at 146
pixels, the vit config's, for imagenette). Targets for CIFAR-10: under 60 s and 2 GB. With
--keep=DIR the prepared dataset stays in DIR, a data_dir for `--config.dataset.data_dir`
(e.g. to time a config's `:smoke` on a dataset of the real size, offline).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from actbench.engine import prepare
    what, name, data_dir, sha256 = sys.argv[1:5]
    def rss():
      with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    before, start = rss(), time.perf_counter()
    if what == "prepare":
      prepare.prepare(name, data_dir=data_dir, sha256=sha256, progress=False)
    else:
      size = 146 if name == "imagenette" else None
      split = prepare.open_split(name, "train", data_dir, image_size=size)
      order = np.random.default_rng(0).permutation(len(split))
      for i in range(0, len(order) - 255, 256):
        split.read(order[i:i + 256])
    elapsed = time.perf_counter() - start
    print(f"{what:<8s} {elapsed:7.2f} s   peak RSS {rss():6.0f} MB "
          f"({rss() - before:+.0f} MB over the {before:.0f} MB after imports)")
""")


def _blocks(rng, n: int, height: int, width: int) -> np.ndarray:
  """n uint8 CHW images of random 4x4-pixel blocks with a little noise."""
  blocks = rng.integers(0, 256, (n, 3, -(-height // 4), -(-width // 4))).astype(np.int16)
  chw = blocks.repeat(4, axis=2).repeat(4, axis=3)[:, :, :height, :width]
  return np.clip(chw + rng.integers(-2, 3, chw.shape), 0, 255).astype(np.uint8)


def _cifar_members(name: str, train: int, test: int):
  """(path in the archive, examples, label bytes, classes) of each CIFAR batch file."""
  if name == "cifar10":
    files = [(f"cifar-10-batches-bin/data_batch_{i}.bin", train // 5 + (i <= train % 5))
             for i in range(1, 6)] + [("cifar-10-batches-bin/test_batch.bin", test)]
    return [(path, n, 1, 10) for path, n in files]
  return [("cifar-100-binary/train.bin", train, 2, 100),
          ("cifar-100-binary/test.bin", test, 2, 100)]


def _add(tar: tarfile.TarFile, path: str, content: bytes):
  info = tarfile.TarInfo(path)
  info.size = len(content)
  tar.addfile(info, io.BytesIO(content))


def fabricate(path: str, train: int, test: int, seed: int = 0, name: str = "cifar10") -> str:
  """A CIFAR-10 or CIFAR-100 binary archive of random images; its sha256. Built one batch file
  at a time, so that this process stays small too."""
  rng = np.random.default_rng(seed)
  with tarfile.open(path, "w:gz", compresslevel=6) as tar:
    for member, n, label_bytes, classes in _cifar_members(name, train, test):
      pixels = _blocks(rng, n, 32, 32).reshape(n, 3072)
      labels = rng.integers(0, classes, (n, label_bytes))  # CIFAR-100: coarse, fine
      _add(tar, member, np.concatenate([labels, pixels], 1).astype(np.uint8).tobytes())
  return _sha256(path)


def fabricate_imagenette(path: str, train: int, test: int, seed: int = 0) -> str:
  """An imagenette-160.tgz of random-block JPEGs (160 pixels on the shorter side, the longer
  one 160 to 240, some grayscale) spread over TFDS's 10 classes; its sha256."""
  from actbench.engine import prepare  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  wnids = prepare.imagenette_labels()
  with tarfile.open(path, "w:gz", compresslevel=6) as tar:
    for folder, count in (("train", train), ("val", test)):
      for i in range(count):
        longer = int(rng.integers(160, 241))
        height, width = (160, longer) if rng.random() < 0.7 else (longer, 160)
        image = Image.fromarray(_blocks(rng, 1, height, width)[0].transpose(1, 2, 0))
        buffer = io.BytesIO()
        image.convert("L" if rng.random() < 0.02 else "RGB").save(buffer, "JPEG", quality=85)
        wnid = wnids[i % len(wnids)]
        _add(tar, f"imagenette-160/{folder}/{wnid}/{wnid}_{i}.JPEG", buffer.getvalue())
  return _sha256(path)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", choices=("cifar10", "cifar100", "imagenette"),
                      default="cifar10")
  parser.add_argument("--train", type=int, default=None, help="default: the real number")
  parser.add_argument("--test", type=int, default=None, help="default: the real number")
  parser.add_argument("--keep", default=None,
                      help="prepare into this data_dir and keep it (default: a temporary one)")
  args = parser.parse_args()
  name = args.dataset
  workdir = args.keep or tempfile.mkdtemp(prefix="actbench-bench-prepare-")
  try:
    sys.path.insert(0, _ROOT)
    from actbench.engine import data, prepare  # pylint: disable=import-outside-toplevel
    sizes = data.official_sizes(name)  # the real archive's train and test images
    train = sizes[0] if args.train is None else args.train
    test = sizes[1] if args.test is None else args.test
    archive = prepare.archive_path(name, workdir)
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    if name == "imagenette":
      sha256 = fabricate_imagenette(archive, train, test)
    else:
      sha256 = fabricate(archive, train, test, name=name)
    print(f"  {name} archive: {train:,} + {test:,} images, "
          f"{os.path.getsize(archive) / 1e6:.0f} MB")
    for what in ("prepare", "read"):
      subprocess.run([sys.executable, "-c", MEASURE, what, name, workdir, sha256], check=True,
                     cwd=_ROOT)
  finally:
    if not args.keep:
      shutil.rmtree(workdir)


if __name__ == "__main__":
  main()
