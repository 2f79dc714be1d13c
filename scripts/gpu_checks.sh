#!/usr/bin/env bash
# The checks of issue 10 ("Speed and scale") that need CUDA, in one prepared run of about 8 minutes on an H200.
# On the lent machine, torch lives in /opt/torch/.venv, first on PATH: call its python directly, not through a link.
# Run from the repository root on the GPU machine, with erav1's requirements importable:
#
#     DATA=/path/to/cifar10.zip RESULTS=/some/folder bash scripts/gpu_checks.sh
#
# Every step has its own time limit and the run goes on after a failed step, so one failure costs one step.
# Everything it measures lands in RESULTS: the logs, the benchmark JSON (copy gpu-*.json into book/results/bench/
# and run 'python scripts/bench_train.py --refresh-readme'), and each training run's history and config.
set -uo pipefail
DATA=${DATA:-../shared/data/cifar10-jpeg.zip}
RESULTS=${RESULTS:-gpu-results}
CACHE=${CACHE:-$HOME/.cache/erav1}
BUDGET_S=${BUDGET_S:-520}  # optional steps are skipped once this much time has gone
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 ERAV1_TEST_DATA=$DATA
START=$SECONDS

step() {  # step NAME LIMIT_S COMMAND...: run it, log it, time it
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "=== $name ($((SECONDS - START)) s in)"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$RESULTS/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >>"$RESULTS/steps.txt"
}

optional() {  # optional NAME LIMIT_S COMMAND...: a step that runs only while the budget lasts
    if ((SECONDS - START + $2 > BUDGET_S)); then
        echo "=== $1: skipped, the budget is spent" && echo "$1 skipped 0" >>"$RESULTS/steps.txt"
    else
        step "$@"
    fi
}

train() {  # train NAME [erav1 train options...]: the book's recipe for 20 epochs, timed end to end as a reader runs it
    local name=$1
    shift
    step "$name" 150 python -m erav1 train --data "$DATA" --data-dir "$CACHE" --run-dir "$RESULTS/$name" \
        --no-progress "$@"
    rm -f "$RESULTS/$name"/*.pt  # the weights stay behind; history.json, config.json and environment.json come back
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RESULTS/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$RESULTS/gpu.txt"
NAME=$(python -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")

# The decoded-image cache, once, so that every later step loads the data as a second run does.
step data 120 python -c "from erav1.utils.data import load_data; load_data('$DATA', '$CACHE')"

# CUDA's own paths: the loss check without a sync, and Grad-CAM on CUDA against the CPU.
step cuda-tests 120 python -m pytest -q -s -rs tests/test_losswatch.py tests/test_gradcam.py -k cuda

# Both loops side by side at the book's batch, erav1's 20-epoch fit timed end to end, and the profile.
step bench-b512 200 python scripts/bench_train.py --data "$DATA" --data-dir "$CACHE" --device cuda \
    --batch-size 512 --images 25600 --rounds 3 --full-run --profile --json "$RESULTS/gpu-$NAME-b512.json"

# fp16 + GradScaler, the path a T4 takes: the same seed as the bf16 fit above.
train fp16 --precision fp16

# Where a whole run's time goes outside its epochs: importing, and writing one last.pt (fsync included).
step overheads 60 python -c "
import time; t = time.perf_counter(); import erav1.main; print(f'import erav1.main: {time.perf_counter() - t:.2f} s')
import tempfile, torch; from erav1.models import ResNet18; from erav1.utils.checkpoint import atomic_save
m = ResNet18().cuda(); o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9); m(torch.randn(8, 3, 32, 32).cuda()).sum().backward(); o.step()
for _ in range(3):
    t = time.perf_counter(); atomic_save({'model': m.state_dict(), 'optimizer': o.state_dict()}, tempfile.mktemp()); print(f'last.pt: {time.perf_counter() - t:.3f} s')
"

# torch.compile: its throughput and its fit, the compile time included; the cache then serves the CLI run.
optional bench-b512-compile 240 python scripts/bench_train.py --data "$DATA" --data-dir "$CACHE" --device cuda \
    --batch-size 512 --images 25600 --rounds 3 --full-run --compile \
    --json "$RESULTS/gpu-$NAME-b512-compiled.json"

# CUDA graphs: the launch cost gone, the compile time paid in the first epoch.
optional bench-b512-cudagraphs 200 python scripts/bench_train.py --data "$DATA" --data-dir "$CACHE" --device cuda \
    --batch-size 512 --images 25600 --rounds 3 --full-run --compile --compile-mode reduce-overhead \
    --json "$RESULTS/gpu-$NAME-b512-cudagraphs.json"

# torchrun (as its module, which every torch install has) with one process on the one GPU: the DDP path.
optional torchrun-1 150 python -m torch.distributed.run --standalone --nproc_per_node=1 -m erav1 train --data "$DATA" \
    --data-dir "$CACHE" --run-dir "$RESULTS/torchrun-1" --no-progress --epochs 3
rm -f "$RESULTS/torchrun-1"/*.pt

# Several Optuna trials at once on one GPU, each a real 'erav1 train' process: the search's machinery on CUDA.
optional search-smoke 120 python scripts/search_recipe.py --data "$DATA" --data-dir "$CACHE" --trials 4 --jobs 4 \
    --epochs 2 --storage "sqlite:///$RESULTS/search-smoke.db" --runs /tmp/search-smoke-runs --subset 5000

# kuangliu's own batch size.
optional bench-b128 90 python scripts/bench_train.py --data "$DATA" --data-dir "$CACHE" --device cuda \
    --batch-size 128 --images 12800 --rounds 3 --json "$RESULTS/gpu-$NAME-b128.json"

if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then  # several GPUs through nccl: one process against two
    optional nccl 200 python -m pytest -q -rs tests/test_distributed.py -k cuda
fi
echo "=== done after $((SECONDS - START)) s"
cat "$RESULTS/steps.txt"
