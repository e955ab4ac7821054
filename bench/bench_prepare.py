"""Speed and memory of preparing CIFAR-10 (actbench.engine.prepare) from a full-size archive.

    python -m bench.bench_prepare                    # 50,000 + 10,000 images, as the real one
    python -m bench.bench_prepare --train 5000       # a quick run

Fabricates a cifar-10-binary.tar.gz in the official layout, of random 8x8 blocks with a little
noise: they compress about as well as the real photographs (to 90% against 92.5%), so gzip
works as hard. The archive is placed where a hand-placed one goes, then, each in a fresh process so that its peak memory (VmHWM) is its
own: `prepare` (sha256 of the archive, one streaming pass over the tar, the .npy files) and a
shuffled epoch of `open_split(...).read` in batches of 256. Targets: under 60 s and 2 GB.
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
    what, data_dir, sha256 = sys.argv[1:4]
    def rss():
      with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    before, start = rss(), time.perf_counter()
    if what == "prepare":
      prepare.prepare("cifar10", data_dir=data_dir, sha256=sha256, progress=False)
    else:
      split = prepare.open_split("cifar10", "train", data_dir)
      order = np.random.default_rng(0).permutation(len(split))
      for i in range(0, len(order) - 255, 256):
        split.read(order[i:i + 256])
    elapsed = time.perf_counter() - start
    print(f"{what:<8s} {elapsed:7.2f} s   peak RSS {rss():6.0f} MB "
          f"({rss() - before:+.0f} MB over the {before:.0f} MB after imports)")
""")


def fabricate(path: str, train: int, test: int, seed: int = 0) -> str:
  """A CIFAR-10 binary archive (5 train batch files and a test file) of random images; its
  sha256. Built one batch file at a time, so that this process stays small too."""
  rng = np.random.default_rng(seed)
  sizes = {f"data_batch_{i}.bin": train // 5 + (i <= train % 5) for i in range(1, 6)}
  sizes["test_batch.bin"] = test
  with tarfile.open(path, "w:gz", compresslevel=6) as tar:
    for name, n in sizes.items():
      blocks = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.int16)
      chw = blocks.repeat(4, axis=2).repeat(4, axis=3) + rng.integers(-2, 3, (n, 3, 32, 32))
      records = np.concatenate([rng.integers(0, 10, (n, 1)),
                                np.clip(chw, 0, 255).reshape(n, 3072)], 1).astype(np.uint8)
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = records.nbytes
      tar.addfile(info, io.BytesIO(records.tobytes()))
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train", type=int, default=50_000)
  parser.add_argument("--test", type=int, default=10_000)
  args = parser.parse_args()
  workdir = tempfile.mkdtemp(prefix="actbench-bench-prepare-")
  try:
    sys.path.insert(0, _ROOT)
    from actbench.engine import prepare  # pylint: disable=import-outside-toplevel
    archive = prepare.archive_path("cifar10", workdir)
    os.makedirs(os.path.dirname(archive))
    sha256 = fabricate(archive, args.train, args.test)
    print(f"  archive: {args.train:,} + {args.test:,} images, "
          f"{os.path.getsize(archive) / 1e6:.0f} MB")
    for what in ("prepare", "read"):
      subprocess.run([sys.executable, "-c", MEASURE, what, workdir, sha256], check=True,
                     cwd=_ROOT)
  finally:
    shutil.rmtree(workdir)


if __name__ == "__main__":
  main()
