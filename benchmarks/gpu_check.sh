#!/usr/bin/env bash
# Issue 12's GPU numbers in one prepared script (under 10 minutes on one GPU):
#   bf16 training images/s at 64 and 128 px, pixel and latent (cached latents of the default f = 4 autoencoder),
#   sampling images/s (DPM-Solver++ 20 steps, guidance 2, VAE decode included for latents), encode/decode
#   images/s and peak GPU memory of every phase. Untrained default-size models: timing only.
# Without CUDA it says so and runs a CPU fallback at tiny sizes, which only shows that the script works.
#
#   bash benchmarks/gpu_check.sh                  # results in $OUT (default benchmarks/results)
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# Each measurement runs under `timeout`, so the whole script stays under 10 minutes even if a phase hangs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: GPU mode on {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
    for side in 64 128; do
        timeout 270 "$PY" benchmarks/latent_performance.py --device cuda --mixed_precision bf16 --repeats 1 \
            --pixel_resolution "$side" --latent_resolution "$side" --sample_batch 16 --sample_steps 20 \
            --train_rows 256 --train_steps 40 --warmup 10 --batch_size 32 --codec_images 64 \
            --json "$OUT/gpu_check_${side}px.json" --markdown "$OUT/gpu_check_${side}px.md"
    done
else
    echo "gpu_check: NO CUDA DEVICE: CPU fallback mode at tiny sizes (16/32 px, tiny models); these numbers only" \
         "show that the script runs, they are NOT GPU numbers"
    timeout 540 "$PY" benchmarks/latent_performance.py --quick --device cpu \
        --json "$OUT/gpu_check_cpu_fallback.json" --markdown "$OUT/gpu_check_cpu_fallback.md"
fi
echo "gpu_check: done in $(( $(date +%s) - START )) s; results in $OUT"
