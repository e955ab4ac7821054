"""Bookkeeping of bench/accelerator_check.py: the wall-clock budget its sections share, the
JSON report rewritten after every measurement, failures recorded as rows rather than raised,
the device and its datasheet peaks, and the printed table."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import jax

from actbench.search import replay


# Dense (no sparsity) peak TFLOP/s from the vendors' datasheets, by device kind: the first entry
# whose key is in `jax.devices()[0].device_kind` applies. None: a kind whose peaks differ from
# its family's and are not listed (better unknown than wrong). float32 is the non-tensor-core
# rate; XLA runs float32 matmuls and convolutions on NVIDIA tensor cores as TF32 by default
# (jax_default_matmul_precision), hence 'tfloat32' too.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bfloat16": 756.0, "tfloat32": 378.0, "float32": 51.0}),
    ("H100 NVL", None),
    ("H200 NVL", None),
    ("H200", {"bfloat16": 989.0, "tfloat32": 494.0, "float32": 67.0}),
    ("H100", {"bfloat16": 989.0, "tfloat32": 494.0, "float32": 67.0}),  # SXM
    ("A100", {"bfloat16": 312.0, "tfloat32": 156.0, "float32": 19.5}),
    ("TPU v4", {"bfloat16": 275.0}),
)
PEAK_KINDS = ("bfloat16", "float32", "tfloat32")
REPORT_NAME = "accelerator_check.json"


class Budget:
  """The check's wall-clock budget, shared out between the sections as they start: a section
  may spend its weight's share of what is left then, so what one section leaves unspent goes
  to the ones after it."""

  def __init__(self, total_s: float, weights: dict[str, float]):
    self.deadline = time.monotonic() + total_s
    self.weights = dict(weights)
    self.section_deadline = self.deadline

  def start(self, section: str) -> None:
    weight = self.weights.pop(section, 0.0)
    total = weight + sum(self.weights.values())
    share = weight / total if total > 0 else 1.0
    now = time.monotonic()
    self.section_deadline = now + max(self.deadline - now, 0.0) * share

  def left(self) -> float:
    return self.section_deadline - time.monotonic()

  def skip_reason(self, estimate_s: float | None) -> str | None:
    """Why a measurement that should take about `estimate_s` (None: unknown) is not started,
    or None to start it."""
    left = self.left()
    if left <= 0 or (estimate_s is not None and estimate_s > left):
      need = "" if estimate_s is None else f"needs ~{estimate_s:.0f} s, "
      return f"budget: {need}{max(left, 0):.0f} s left for the section"
    return None


class Report:
  """The JSON report, rewritten (atomically) after every measurement, and the printed rows."""

  def __init__(self, out_dir: str, env: dict):
    os.makedirs(out_dir, exist_ok=True)
    self.path = os.path.join(out_dir, REPORT_NAME)
    self.started = time.perf_counter()
    self.data: dict[str, Any] = {"schema_version": 1, "env": env, "flops": [], "training": [],
                                 "vision": [], "vision_largest": {}, "fisher": [],
                                 "compile": [], "section_errors": {}, "wall_s": None,
                                 "complete": False}

  def add(self, section: str, row: dict) -> dict:
    self.data[section].append(row)
    print(format_row(section, row), flush=True)
    self.save()
    return row

  def save(self, complete: bool = False) -> None:
    self.data["compile"] = compile_rows(self.data)
    self.data["wall_s"] = time.perf_counter() - self.started
    self.data["process_wall_s"] = process_age_s()
    self.data["complete"] = complete
    temporary = self.path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
      json.dump(replay.jsonable(self.data), f, indent=1, allow_nan=False)
    os.replace(temporary, self.path)


def process_age_s() -> float | None:
  """Seconds since this process started (imports and backend start-up included), from Linux's
  /proc; None elsewhere."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      started_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def is_out_of_memory(error: BaseException) -> bool:
  text = str(error)
  return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))


class PredictedOutOfMemory(RuntimeError):
  """The compiled program needs more memory than the device has: not worth running."""


def attempt(row: dict, measure: Callable[[], dict]) -> dict:
  """`row` updated with what `measure()` returns (status 'ok'), or with why it failed ('oom' or
  'failed' and the error's first line): one failure must not stop the check."""
  start = time.perf_counter()
  try:
    row.update(measure())
    row["status"] = "ok"
  except Exception as error:  # pylint: disable=broad-except
    row["status"] = "oom" if is_out_of_memory(error) else "failed"
    row["error"] = describe(error)
  row["measure_s"] = time.perf_counter() - start
  gc.collect()  # the failed program's buffers, before the next one allocates
  return row


def describe(error: BaseException) -> str:
  """The error's type and first line: XLA's messages run to pages."""
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def skipped(row: dict, reason: str) -> dict:
  row.update(status="skipped", error=reason)
  return row


def peak_tflops(device_kind: str) -> dict[str, float] | None:
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return dict(peaks) if peaks else None
  return None


def memory_limit() -> int | None:
  """The device allocator's limit in bytes (None on CPU, which reports no memory stats)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_limit")


def environment(sizes, tiny: bool) -> dict:
  """The device, the software and `sizes` (a dataclass) as the report's env."""
  device = jax.devices()[0]
  peaks = peak_tflops(device.device_kind)
  return {
      "device_kind": device.device_kind, "platform": device.platform,
      "device_count": jax.device_count(), "jax_version": jax.__version__,
      "jaxlib_version": _version("jaxlib"), "flax_version": _version("flax"),
      "python": platform.python_version(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "peak_tflops": peaks, "peak_note": None if peaks else "unknown peak",
      "memory_bytes_limit": memory_limit(),
      "default_matmul_precision": jax.config.jax_default_matmul_precision,
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "tiny": tiny,
      "sizes": dataclasses.asdict(sizes),
  }


def _version(package: str) -> str | None:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def throughput(row: dict, flops_per_step: float | None, peaks: dict | None) -> dict:
  """Achieved TFLOP/s of a measured step and their fraction of each known peak."""
  if not flops_per_step or not row.get("step_s"):
    return {"flops_per_step": flops_per_step, "tflops_per_s": None, "fraction_of_peak": None}
  tflops = flops_per_step / row["step_s"] / 1e12
  fractions = None if not peaks else {k: tflops / peaks[k] if k in peaks else None
                                      for k in PEAK_KINDS}
  return {"flops_per_step": flops_per_step, "tflops_per_s": tflops,
          "fraction_of_peak": fractions}


def compile_rows(report_data: dict) -> list[dict]:
  """Every measured program's compile time, first call and steady step, in one list."""
  rows = []
  for section in ("training", "vision"):
    for r in report_data[section]:
      if r.get("status") == "ok":
        rows.append({"program": f"{section}/{r.get('model')}/{r.get('dtype')}/"
                                f"{r.get('strategy')}/P={r.get('population')}",
                     **{k: r.get(k) for k in ("lower_s", "compile_s", "first_call_s",
                                              "step_s")}})
  for r in report_data["fisher"]:
    if r.get("status") == "ok":
      rows.append({"program": f"fisher/{r.get('model')}/{r.get('strategy')}/"
                              f"{r.get('eigenvalues', 'host')}/P={r.get('population')}",
                   "compile_s": r.get("seconds", {}).get("compile"),
                   "first_call_s": r.get("total_s"), "step_s": None})
  return rows


def _num(value, scale: float = 1.0, digits: int = 1) -> str:
  if value is None:
    return "-"
  return f"{value * scale:.{digits}f}"


def _percent(row: dict, kind: str) -> str:
  fractions = row.get("fraction_of_peak")
  if not fractions:
    return "?"  # unknown peak
  value = fractions.get(kind)
  return "?" if value is None else f"{100 * value:.1f}"


HEADERS = {
    "flops": f"{'program':46s} {'by hand':>12s} {'lowered':>12s} {'compiled':>12s} "
             f"{'ratio':>6s} {'ratio c':>7s}",
    "training": f"{'model':9s} {'dtype':8s} {'strategy':8s} {'P':>4s} {'status':8s} "
                f"{'comp s':>7s} {'1st s':>7s} {'step ms':>9s} {'mod-ep/s':>9s} "
                f"{'TFLOP/s':>8s} {'%bf16':>6s} {'%fp32':>6s} {'GB/memb':>8s}",
    "vision": f"{'model':9s} {'P':>4s} {'status':8s} {'comp s':>7s} {'1st s':>7s} "
              f"{'step ms':>9s} {'img/s':>9s} {'TFLOP/s':>8s} {'%bf16':>6s} {'GB/memb':>8s}",
    "fisher": f"{'model':9s} {'strategy':8s} {'eigvals':14s} {'P':>4s} {'status':8s} "
              f"{'total s':>8s} {'setup':>6s} "
              f"{'compile':>7s} {'device':>7s} {'host':>7s} {'feat/s':>8s} {'w/o comp':>8s} "
              f"{'failed':>6s}",
}


def format_row(section: str, r: dict) -> str:
  status = r.get("status", "?")
  tail = f"  {r['error']}" if r.get("error") else ""
  if section == "flops":
    return (f"{r['program'][:46]:46s} {_num(r.get('by_hand'), 1, 0):>12s} "
            f"{_num(r.get('lowered_cpu'), 1, 0):>12s} {_num(r.get('compiled'), 1, 0):>12s} "
            f"{_num(r.get('ratio_lowered'), 1, 3):>6s} {_num(r.get('ratio_compiled'), 1, 3):>7s}"
            f"{tail}")
  if section == "training":
    return (f"{r['model']:9s} {r['dtype']:8s} {r['strategy']:8s} {r['population']:4d} "
            f"{status:8s} {_num(r.get('compile_s')):>7s} {_num(r.get('first_call_s')):>7s} "
            f"{_num(r.get('step_s'), 1e3, 2):>9s} {_num(r.get('model_epochs_per_s'), 1, 3):>9s} "
            f"{_num(r.get('tflops_per_s'), 1, 2):>8s} {_percent(r, 'bfloat16'):>6s} "
            f"{_percent(r, 'float32'):>6s} {_num(_gb_per_member(r), 1, 3):>8s}{tail}")
  if section == "vision":
    return (f"{r['model']:9s} {r['population']:4d} {status:8s} "
            f"{_num(r.get('compile_s')):>7s} {_num(r.get('first_call_s')):>7s} "
            f"{_num(r.get('step_s'), 1e3, 2):>9s} {_num(r.get('images_per_s'), 1, 0):>9s} "
            f"{_num(r.get('tflops_per_s'), 1, 2):>8s} {_percent(r, 'bfloat16'):>6s} "
            f"{_num(_gb_per_member(r), 1, 3):>8s}{tail}")
  seconds = r.get("seconds") or {}
  return (f"{r['model']:9s} {r.get('strategy', '?'):8s} {r.get('eigenvalues', 'host'):14s} "
          f"{r['population']:4d} {status:8s} {_num(r.get('total_s')):>8s} "
          f"{_num(seconds.get('setup')):>6s} {_num(seconds.get('compile')):>7s} "
          f"{_num(seconds.get('device')):>7s} {_num(seconds.get('host')):>7s} "
          f"{_num(r.get('features_per_s'), 1, 2):>8s} "
          f"{_num(r.get('features_per_s_compiled'), 1, 2):>8s} "
          f"{_num(r.get('failed_members'), 1, 0):>6s}{tail}")


def _gb_per_member(row: dict) -> float | None:
  return row["bytes_per_member"] / 2**30 if row.get("bytes_per_member") else None


def print_tables(report_data: dict) -> None:
  env = report_data["env"]
  peaks = env["peak_tflops"] or env["peak_note"]
  print(f"\n{env['device_kind']} ({env['platform']}), jax {env['jax_version']}, {env['date']}; "
        f"peak TFLOP/s: {peaks}")
  for section in ("flops", "training", "vision", "fisher"):
    print(f"\n[{section}]\n{HEADERS[section]}")
    for row in report_data[section]:
      print(format_row(section, row))
  for model, summary in report_data["vision_largest"].items():
    print(f"{model}: largest population that fits: {summary['population']} "
          f"(predicted {summary['predicted']}, {'run' if summary['verified'] else 'not run'}"
          f"{', the limit' if summary['limit_reached'] else ''})")
  print(f"\nwall time of the check: {report_data['wall_s']:.1f} s (the process: "
        f"{_num(report_data.get('process_wall_s'))} s)")
