#!/usr/bin/env bash
# Runs an actbench experiment on a Cloud TPU pod slice: create the slice, copy this checkout to
# every worker, install, and run the same command on every worker with jax.distributed.
#
#   launch/tpu_pod.sh create                      # once: the TPU VM slice
#   launch/tpu_pod.sh copy                        # this checkout -> ~/actbench on every worker
#   launch/tpu_pod.sh install                     # pip install -e . and jax[tpu] on every worker
#   launch/tpu_pod.sh run configs/cnn.py          # the experiment, on every worker at once
#   launch/tpu_pod.sh run configs/cnn.py --config.mode=benchmark   # extra flags pass through
#   launch/tpu_pod.sh delete                      # when done: the slice costs money while it exists
#
# Settings come from the environment (defaults in brackets):
#   TPU_NAME [actbench], ZONE [us-central2-b], ACCELERATOR [v4-32], VERSION [tpu-ubuntu2204-base],
#   PROJECT [gcloud's default], WORKDIR [~/actbench-work]
# Every worker runs `python -m actbench.main --distributed`: jax.distributed.initialize() finds the
# other workers from the TPU metadata, the population axis is sharded over every chip of the
# slice, and process 0 owns the search store (WORKDIR/search.sqlite on worker 0) and prints the
# results. Orbax checkpoints of a multi-host population need a WORKDIR that every worker shares
# (a Filestore mount or gcsfuse); on local disks pass --config.checkpoint_every_epochs=0.
# Datasets: prepare them once into a shared directory, `python -m actbench.prepare NAME
# --data_dir=DIR` (CIFAR, Imagenette) or `tfds build imagenet2012 --data_dir=DIR
# --file_format=array_record`, and pass --config.dataset.data_dir=DIR.
set -euo pipefail

TPU_NAME="${TPU_NAME:-actbench}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
VERSION="${VERSION:-tpu-ubuntu2204-base}"
WORKDIR="${WORKDIR:-~/actbench-work}"
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "${PROJECT}"); fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" "${PROJECT_FLAG[@]}" \
    --worker=all --command "$1"
}

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone "${ZONE}" "${PROJECT_FLAG[@]}" \
      --accelerator-type "${ACCELERATOR}" --version "${VERSION}"
    ;;
  copy)
    # Only what git tracks: no local workdirs, caches or virtual environments.
    archive="$(mktemp -t actbench.XXXXXX.tar.gz)"
    git -C "${ROOT}" archive --format=tar.gz -o "${archive}" HEAD
    gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:~/actbench.tar.gz" \
      --zone "${ZONE}" "${PROJECT_FLAG[@]}" --worker=all
    on_all_workers "rm -rf ~/actbench && mkdir -p ~/actbench && tar -xzf ~/actbench.tar.gz -C ~/actbench"
    rm -f "${archive}"
    ;;
  install)
    on_all_workers "cd ~/actbench && python3 -m pip install --quiet -U 'jax[tpu]' \
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && \
      python3 -m pip install --quiet -e ."
    ;;
  run)
    config="${2:?usage: $0 run CONFIG [flags...]}"
    shift 2
    extra=""
    if [[ $# -gt 0 ]]; then extra="$(printf ' %q' "$@")"; fi
    on_all_workers "cd ~/actbench && python3 -m actbench.main --config=${config} \
      --workdir=${WORKDIR} --distributed${extra}"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone "${ZONE}" "${PROJECT_FLAG[@]}" --quiet
    ;;
  *)
    sed -n '2,25p' "$0"
    exit 2
    ;;
esac
