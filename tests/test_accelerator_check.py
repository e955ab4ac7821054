"""bench/accelerator_check.py: its --tiny run writes every section with finite positive figures,
its FLOP counts agree with counts by hand, and its bookkeeping (budget, out-of-memory series,
the largest population that fits) does what the device run relies on, checked without a device.

The --tiny run takes over a minute of the 2-core CI machine's 15: its tests are extended, run
with `python -m pytest -q --runslow tests/test_accelerator_check.py` before a device session
(and after any change to bench/accelerator_check.py); the bookkeeping tests always run.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from bench import accelerator_check as check
from bench import accelerator_report as bookkeeping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENSE_FLOPS = 6 * 256 * 512 * 1024  # dense_check's layer: forward, input and weight gradients
# All-CNN-C's forward multiply-adds per 32x32x3 image, layer by layer (output side^2 x output
# channels x kernel^2 x input channels), times 2 FLOPs each, for a batch of 8.
ALLCNNC_MACS = (32 * 32 * 96 * 9 * 3 + 32 * 32 * 96 * 9 * 96 + 16 * 16 * 96 * 9 * 96 +
                16 * 16 * 192 * 9 * 96 + 16 * 16 * 192 * 9 * 192 + 8 * 8 * 192 * 9 * 192 +
                6 * 6 * 192 * 9 * 192 + 6 * 6 * 192 * 192 + 6 * 6 * 10 * 192)
ALLCNNC_FLOPS = 8 * 2 * ALLCNNC_MACS


def positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
  out = tmp_path_factory.mktemp("accelerator_check")
  command = [sys.executable, "-m", "bench.accelerator_check", "--tiny", f"--out={out}"]
  # One CPU device whatever the caller's XLA_FLAGS say: populations of 1 must not be split.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                       check=False)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  with open(out / bookkeeping.REPORT_NAME, encoding="utf-8") as f:
    return json.load(f), run.stdout


@pytest.mark.slow
@pytest.mark.extended  # the --tiny run: see the module docstring
def test_tiny_run_records_the_device_and_finishes(tiny_report):
  report, stdout = tiny_report
  env = report["env"]
  assert env["device_kind"] and env["jax_version"] and env["date"] and env["tiny"]
  assert report["complete"] and positive(report["wall_s"])
  assert report["section_errors"] == {}
  if env["platform"] == "cpu":  # no made-up peak for a CPU
    assert env["peak_tflops"] is None and env["peak_note"] == "unknown peak"
  for section in ("[flops]", "[training]", "[vision]", "[fisher]", "wall time of the check"):
    assert section in stdout  # the printed table


@pytest.mark.slow
@pytest.mark.extended  # the --tiny run: see the module docstring
def test_tiny_flop_counts_agree_with_counts_by_hand(tiny_report):
  rows = {row["program"]: row for row in tiny_report[0]["flops"]}
  dense = rows["dense 256x512x1024, forward and backward"]
  assert dense["by_hand"] == DENSE_FLOPS
  assert dense["lowered_cpu"] == pytest.approx(DENSE_FLOPS, rel=0.01)
  assert dense["compiled"] == pytest.approx(DENSE_FLOPS, rel=0.01)
  forward = rows["All-CNN-C forward, batch 8"]
  assert forward["by_hand"] == ALLCNNC_FLOPS  # the script's table of layers, as the paper's
  # Biases and activations add under 1%.
  assert 1.0 <= forward["lowered_cpu"] / ALLCNNC_FLOPS < 1.05
  assert 1.0 <= forward["compiled"] / ALLCNNC_FLOPS < 1.05
  loop = rows["lax.map of 8 matmuls 128^3"]
  assert loop["status"] == "ok" and positive(loop["ratio_lowered"])


def _program_figures_ok(row):
  assert row["status"] == "ok", row
  for key in ("lower_s", "compile_s", "first_call_s", "step_s", "images_per_s",
              "flops_per_member_step", "flops_per_step", "tflops_per_s", "program_bytes",
              "bytes_per_member"):
    assert positive(row[key]), (key, row)
  assert row["flops_per_step"] == pytest.approx(row["flops_per_member_step"] * row["population"])
  assert row["first_call_s"] >= row["compile_s"]
  assert row["loss_finite"]


@pytest.mark.slow
@pytest.mark.extended  # the --tiny run: see the module docstring
def test_tiny_training_measures_every_strategy_dtype_and_population(tiny_report):
  report = tiny_report[0]
  rows = report["training"]
  for row in rows:
    _program_figures_ok(row)
    assert positive(row["model_epochs_per_s"])
    if row["strategy"] == "single":  # no loop: XLA's count of the compiled step agrees
      assert 0.95 < row["xla_program_flops"] / row["flops_per_member_step"] < 1.3
    if report["env"]["peak_tflops"] is None:
      assert row["fraction_of_peak"] is None
  assert {r["model"] for r in rows} == {"allcnnc", "resnet56"}
  assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
  assert {r["strategy"] for r in rows} == {"single", "vmap", "grouped", "map"}
  for strategy in ("vmap", "map"):
    assert {r["population"] for r in rows if r["strategy"] == strategy} == {1, 2}
  assert [(r["population"], r["group_size"]) for r in rows if r["strategy"] == "grouped"] == [
      (2, 1)]
  compiled = {c["program"] for c in report["compile"]}
  assert "training/allcnnc/float32/vmap/P=2" in compiled
  assert all(positive(c["compile_s"]) for c in report["compile"])


@pytest.mark.slow
@pytest.mark.extended  # the --tiny run: see the module docstring
def test_tiny_vision_and_fisher_sections(tiny_report):
  report = tiny_report[0]
  assert report["vision"]
  for row in report["vision"]:
    _program_figures_ok(row)
    assert row["dtype"] == "bfloat16"
  assert report["vision_largest"]["resnet50"]["population"] >= 1
  assert [(r["model"], r["eigenvalues"]) for r in report["fisher"]] == [
      ("allcnnc", "host"), ("resnet56", "host"), ("resnet56", "device")]
  for row in report["fisher"]:
    assert row["status"] == "ok", row
    assert positive(row["features_per_s"]) and positive(row["total_s"])
    assert row["failed_members"] == 0 and row["feature_length"] > 0
    assert set(row["seconds"]) == {"setup", "compile", "device", "host"}
    assert all(math.isfinite(v) and v >= 0 for v in row["seconds"].values())


# ---- the bookkeeping, without compiling anything ----


def test_peaks_of_known_devices_and_none_for_others():
  assert bookkeeping.peak_tflops("NVIDIA H200")["bfloat16"] == 989.0
  assert bookkeeping.peak_tflops("NVIDIA H100 80GB HBM3")["float32"] == 67.0
  assert bookkeeping.peak_tflops("NVIDIA H100 PCIe")["bfloat16"] == 756.0
  assert bookkeeping.peak_tflops("NVIDIA A100-SXM4-40GB")["float32"] == 19.5
  assert bookkeeping.peak_tflops("TPU v4")["bfloat16"] == 275.0
  assert bookkeeping.peak_tflops("cpu") is None
  assert bookkeeping.peak_tflops("NVIDIA H200 NVL") is None  # not the SXM figures
  row = {"step_s": 0.5}
  figures = bookkeeping.throughput(row, 2e12, bookkeeping.peak_tflops("NVIDIA H200"))
  assert figures["tflops_per_s"] == pytest.approx(4.0)
  assert figures["fraction_of_peak"]["bfloat16"] == pytest.approx(4.0 / 989)
  assert bookkeeping.throughput(row, 2e12, None)["fraction_of_peak"] is None


def test_budget_shares_what_is_left_between_sections(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(check.time, "monotonic", lambda: clock[0])
  budget = bookkeeping.Budget(300.0, {"a": 1.0, "b": 2.0})
  budget.start("a")
  assert budget.left() == pytest.approx(100.0)
  assert budget.skip_reason(None) is None and budget.skip_reason(90.0) is None
  assert "budget" in budget.skip_reason(150.0)
  clock[0] = 50.0  # section a leaves 50 s unspent: b gets them
  budget.start("b")
  assert budget.left() == pytest.approx(250.0)
  clock[0] = 400.0
  assert "budget" in budget.skip_reason(None)


def _fake_program(count, **_):
  return {"init_s": 0.01, "lower_s": 0.01, "compile_s": 0.1, "first_run_s": 0.02,
          "timed_calls": 1, "steps_per_call": 1, "step_s": 0.01 * count, "loss_finite": True,
          "program_bytes": 100 * count, "bytes_per_member": 100}


def test_a_population_that_does_not_fit_ends_its_series_only(monkeypatch, tmp_path):
  def measure_population(config, dataset, names, count, steps, sizes):
    if config.population.strategy == "map" and config.model.dtype == "float32":
      raise RuntimeError("INTERNAL: a compile error")
    if count >= 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1 GiB")
    return _fake_program(count)

  monkeypatch.setattr(check, "measure_population", measure_population)
  monkeypatch.setattr(check, "measure_single", lambda *a, **k: _fake_program(1))
  monkeypatch.setattr(check, "member_step_flops", lambda *a, **k: 1e9)
  report = bookkeeping.Report(str(tmp_path), {"platform": "test"})
  sizes = check.DEFAULT
  check.run_training(report, bookkeeping.Budget(600.0, {"training/allcnnc": 1.0}), "allcnnc",
                     check.training_plan(), ["relu(x)"], sizes, None)
  status = {(r["dtype"], r["strategy"], r["population"]): r["status"]
            for r in report.data["training"]}
  assert status[("bfloat16", "single", 1)] == "ok"
  assert status[("bfloat16", "vmap", 1)] == "ok"
  assert status[("bfloat16", "vmap", 8)] == "oom"
  assert {status[("bfloat16", "vmap", p)] for p in (32, 128, 256)} == {"skipped"}
  assert status[("float32", "vmap", 8)] == "oom"  # the next series starts again
  assert status[("float32", "map", 1)] == "failed"
  assert status[("float32", "map", 8)] == "skipped"
  saved = json.loads((tmp_path / bookkeeping.REPORT_NAME).read_text())
  assert len(saved["training"]) == 2 + 2 * 3 * 5  # singles, then dtype x strategy x population
  skipped = next(r for r in saved["training"] if r["status"] == "skipped")
  assert "did not fit" in skipped["error"]


def test_largest_population_is_predicted_then_run_down_to_what_fits(monkeypatch, tmp_path):
  monkeypatch.setattr(check, "memory_limit", lambda: 10 * 2**30)
  first = {**_fake_program(1), "model": "resnet50", "population": 1, "status": "ok",
           "program_bytes": 2**30}
  runs = []

  def vision_row(report, budget, model, task, names, count, previous, sizes, peaks):
    runs.append(count)
    row = {"model": model, "population": count, "status": "ok" if count <= 5 else "oom"}
    report.data["vision"].append(row)
    return row

  monkeypatch.setattr(check, "_vision_row", vision_row)
  report = bookkeeping.Report(str(tmp_path), {"platform": "test"})
  # pylint: disable-next=protected-access
  check._vision_largest(report, None, "resnet50", None, [], first, check.DEFAULT, None)
  assert runs == [9, 6, 4]  # 0.9 * 10 GiB / 1 GiB, then three quarters while out of memory
  summary = report.data["vision_largest"]["resnet50"]
  assert summary == {"population": 4, "verified": True, "predicted": 9, "limit_reached": False}
