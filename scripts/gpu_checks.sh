#!/usr/bin/env bash
# The checks of issue 10 ("Speed and scale") that need CUDA, in one short run (about 3 minutes on an H200).
# Run from the repository root on the GPU machine, with erav1's requirements installed and the data beside it:
#
#     DATA=../shared/data/cifar10-jpeg.zip bash scripts/gpu_checks.sh
#
# It writes book/results/bench/gpu-*.json and refreshes README's speed table from them; commit both.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10-jpeg.zip}
NAME=$(python -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# 1. The loss check on CUDA: a non-blocking copy into pinned memory, read one check late, first bad step named.
python -m pytest -q -rs tests/test_losswatch.py

# 2. Both loops side by side at the book's batch (512) with a measured 20-epoch fit, and at kuangliu's (128).
python scripts/bench_train.py --data "$DATA" --device cuda --batch-size 512 --images 25600 --rounds 3 --full-run \
    --json "book/results/bench/gpu-$NAME-b512.json"
python scripts/bench_train.py --data "$DATA" --device cuda --batch-size 128 --images 12800 --rounds 3 \
    --json "book/results/bench/gpu-$NAME-b128.json"
python scripts/bench_train.py --refresh-readme

# 3. Several GPUs through nccl, where there are two or more: one process against two, with and without --sync-bn.
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    python -m pytest -q -rs tests/test_distributed.py -k "cuda"
else
    echo "one GPU: the nccl comparison (tests/test_distributed.py -k cuda) needs a machine with two or more"
fi
