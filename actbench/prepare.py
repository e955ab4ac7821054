"""Prepares a dataset once, without TensorFlow (actbench/engine/prepare.py does the work).

    python -m actbench.prepare cifar10                 # or cifar100, imagenette
    python -m actbench.prepare imagenette --data_dir=/data/tfds --url=https://mirror/...

Fetches the official archive (resuming a broken download), verifies it and converts it into
<data_dir>/actbench/<name>/ (data_dir: $TFDS_DATA_DIR or ~/tensorflow_datasets). Offline, put
the archive where the error message says and run the same command. ImageNet stays a manual
`tfds build` (the command says how).
"""

from __future__ import annotations

import argparse
import os
import sys

from actbench.engine import prepare

_MANUAL = ("imagenet2012",)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m actbench.prepare", description=__doc__.split("\n", 1)[0])
  parser.add_argument("name", help=f"one of {', '.join(prepare.PREPARABLE)}")
  parser.add_argument("--data_dir", default=None,
                      help="default $TFDS_DATA_DIR, or ~/tensorflow_datasets")
  parser.add_argument("--url", default=None, help="a mirror of the official archive")
  parser.add_argument("--sha256", default=None,
                      help="the archive's sha256 (default: the official one)")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.name not in prepare.PREPARABLE + _MANUAL:
    print(f"unknown dataset {args.name!r}; choose one of {', '.join(prepare.PREPARABLE)} "
          f"(imagenet2012 is prepared by hand)", file=sys.stderr)
    return 2
  try:
    directory = prepare.prepare(args.name, data_dir=args.data_dir, url=args.url,
                                sha256=args.sha256)
  except prepare.PrepareError as e:
    print(e if args.name in _MANUAL else f"error: {e}", file=sys.stderr)
    return 1
  print(f"{args.name} is ready in {directory}")
  data_dir = os.path.dirname(os.path.dirname(directory))
  if os.path.realpath(data_dir) != os.path.realpath(prepare.default_data_dir()):
    print(f"use it with --config.dataset.data_dir={data_dir}")
  else:
    print(f"use it with --config.dataset.name={args.name} (the default data_dir finds it)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
