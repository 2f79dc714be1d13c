#!/usr/bin/env bash
# Issue 13 on a lent GPU, in the calls one lease allows: the official pixels travel in parts (a call carries
# 64 MiB, of which the working tree takes about 35 MB), the Optuna study runs until its share of the time is
# up, the best recipe then trains on all of train with three seeds, and what the book publishes comes back.
#
#   here, once:  bash scripts/gpu_search.sh split           # .gpu/png/part_aa ... (24 MiB each, ignored by git)
#                bash scripts/gpu_search.sh wheels          # .whl/: what the machine's Python 3.12 lacks
#   there, one call per part but the last, back to back inside the machine's 30-s warm window, each with
#                carry [".gpu/png/part_XX"]:  bash scripts/gpu_search.sh receive
#   there, the last part, carry [".gpu/png/part_XX", ".whl"], timeout_s 600:
#                BUDGET_S=560 bash scripts/gpu_search.sh search
#   here:        bash scripts/gpu_search.sh unpack FILES_AT  # the study into book/results, the published seed's
#                                                            # run into runs/book, published again from there
#
# A machine that went back between calls forgot the parts it had: `search` says so (the joined file fails
# the sha256), and the parts go again from the first. The study continues in the next lease.
set -uo pipefail
PARTS=${PARTS:-.gpu/png}              # where a carried part arrives in the working tree
STORE=${STORE:-$HOME/cifar}           # where the parts wait on the machine, outside the working tree
SOURCE=${SOURCE:-../shared/data/cifar10-png.zip}
SHA256=${SHA256:-64b57bd8146afc5a28fa9e2db4bc98627d3d2c6668f8c7e126ab545d7b5b3f15}  # ../shared/data/README.md
PART_SIZE=${PART_SIZE:-24M}
DATA=${DATA:-cifar10}                 # cifar10: the joined copy, fingerprint-checked as the official pixels
CACHE=${CACHE:-$HOME/.cache/erav1}
WORK=${WORK:-$HOME/search}            # trials' and seeds' run directories (their weights never come back)
STORAGE=${STORAGE:-sqlite:///book/results/recipe_search/study.db}
RESULTS=${RESULTS:-book/results}
BOOK_RUN=${BOOK_RUN:-runs/book}       # here: the run that chapter 3 shows instead of training (20 epochs on a CPU)
# One 20-epoch run alone took 32-41 s on the H200 and eight at once 289 s: the GPU is busy with one, so four at a
# time lose nothing and finish a first wave of four well before the search's time is up.
TRIALS=${TRIALS:-40} JOBS=${JOBS:-4} EPOCHS=${EPOCHS:-20} SEEDS=${SEEDS:-0 1 2} DEVICE=${DEVICE:-auto}
BUDGET_S=${BUDGET_S:-560}             # the whole `search` call; the search gets what setup and the seeds leave
CONFIRM_S=${CONFIRM_S:-170}           # three seeds at once, then publish (eight 20-epoch runs took 289 s on an H200)
TRAIN_ARGS=${TRAIN_ARGS:-}            # more `erav1 train` options for every run, e.g. "--subset 100"
WHEELS=${WHEELS:-.whl}                # the carried wheels of what the machine's Python lacks
OUT=${OUT:-gpu-search-out}
START=$SECONDS
export PYTHONUNBUFFERED=1

fail() { echo "error: $*" >&2; exit 2; }

split_parts() {  # here: the PNG copy in parts small enough to travel beside the working tree
    [ -f "$SOURCE" ] || fail "$SOURCE does not exist; SOURCE names the official PNG copy"
    [ "$(sha256sum "$SOURCE" | cut -d' ' -f1)" = "$SHA256" ] || fail "$SOURCE is not the copy whose sha256 is $SHA256"
    rm -rf "$PARTS" && mkdir -p "$PARTS" && split -b "$PART_SIZE" "$SOURCE" "$PARTS/part_"
    ls -l "$PARTS"
}

receive() {  # there: move the carried part out of the working tree, which the next call replaces
    mkdir -p "$STORE"
    if compgen -G "$PARTS/part_*" >/dev/null; then mv "$PARTS"/part_* "$STORE/"; fi
    echo "parts on this machine: $(cd "$STORE" && ls part_* 2>/dev/null | tr '\n' ' ')"
}

join_parts() {  # there: the copy again, whole and checked, or nothing
    local joined=$STORE/cifar10-png.zip
    export ERAV1_CIFAR10=$joined
    [ -f "$joined" ] && return 0  # joined and checked by an earlier call on this machine
    compgen -G "$STORE/part_*" >/dev/null || fail "no parts in $STORE: send them first ('receive')"
    cat "$STORE"/part_* >"$joined.partial"
    local sha
    sha=$(sha256sum "$joined.partial" | cut -d' ' -f1)
    if [ "$sha" != "$SHA256" ]; then
        rm -f "$joined.partial"
        fail "the parts in $STORE ($(cd "$STORE" && ls part_* | tr '\n' ' ')) join to sha256 $sha, not $SHA256:" \
            "a part is missing, most likely because the machine went back between calls. Send every part again."
    fi
    mv "$joined.partial" "$joined" && rm -f "$STORE"/part_*
}

# erav1's requirements that the GPU machine's image lacks (KINDS.md lists what it has), and what they need.
MISSING="grad-cam==1.5.7 ttach==0.0.3 torch-lr-finder==0.2.2 torchinfo==1.8.0 optuna==5.0.0 alembic==1.20.1
         SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0"

download_wheels() {  # here: wheels for the machine's CPython 3.12 on x86-64; a pure-Python sdist is built here
    local package
    for package in $MISSING; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$WHEELS" "$package" 2>/dev/null ||
            python3 -m pip wheel -q --no-deps -w "$WHEELS" "$package" || fail "pip could not fetch $package"
    done
    ls "$WHEELS"
}

install_wheels() {  # there: what the machine's Python lacks (optuna, grad-cam, ...) travels as wheels
    compgen -G "$WHEELS/*.whl" >/dev/null || return 0
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || fail "the wheels in $WHEELS did not install"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
}

checkpoint_study() {  # fold the write-ahead log into the database file, so that the file alone is the study
    local db=${STORAGE#sqlite:///}
    [ -f "$db" ] && python -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$db"
}

search() {  # there: the study until its time is up, then three seeds of the best recipe, then pack
    cd "$(dirname "$0")/.." || fail "cannot enter the repository"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # erav1 from this working tree: nothing is installed there
    receive
    join_parts
    install_wheels
    mkdir -p "$OUT" "$WORK"
    search_and_confirm 2>&1 | tee -a "$OUT/search.log"  # the log comes back too, whatever happens in it
}

search_and_confirm() {
    python -c "import sys; from erav1.utils.data import load_data; load_data(sys.argv[1], sys.argv[2])" "$DATA" "$CACHE" ||
        fail "the data did not load"
    local search_s=$((BUDGET_S - (SECONDS - START) - CONFIRM_S))
    echo "=== search for $search_s s ($((SECONDS - START)) s in)"
    if ((search_s > 60)); then
        # shellcheck disable=SC2086
        timeout --signal=INT --kill-after=60 "$search_s" python scripts/search_recipe.py --data "$DATA" \
            --data-dir "$CACHE" --storage "$STORAGE" --trials "$TRIALS" --jobs "$JOBS" --epochs "$EPOCHS" \
            --device "$DEVICE" --runs "$WORK/study" $TRAIN_ARGS
        echo "=== search: exit $? ($((SECONDS - START)) s in); 124 or 130: its time was up, the study continues next lease"
    fi
    checkpoint_study
    echo "=== confirmation ($((SECONDS - START)) s in)"
    # shellcheck disable=SC2086
    timeout --signal=INT --kill-after=30 "$((BUDGET_S - (SECONDS - START) - 10))" python scripts/confirm_recipe.py \
        --data "$DATA" --data-dir "$CACHE" --storage "$STORAGE" --seeds $SEEDS --jobs 3 --epochs "$EPOCHS" \
        --device "$DEVICE" --runs "$WORK/confirm" --out "$WORK/published" $TRAIN_ARGS
    echo "=== confirmation: exit $? ($((SECONDS - START)) s in)"
    pack
}

pack() {  # at most 8 files of 16 MiB, 64 MiB together, come back: the small files in one archive, and the published
          # seed's fp32 model.pt in three parts; the fp16 weights, which would not fit beside it, are made here again
    local db=${STORAGE#sqlite:///} small=() published=$WORK/confirm/seed${SEEDS%% *}
    [ -f "$db" ] && small+=(-C "$(dirname "$db")" "$(basename "$db")")
    if [ -f "$WORK/published/summary.json" ]; then
        (cd "$published" && sha256sum model.pt >"$WORK/published/model.sha256")
        small+=(-C "$WORK/published" summary.json model.sha256)
        split -b 15M "$published/model.pt" "$OUT/model.part_"
    fi
    for run in "$WORK"/confirm/seed*; do
        [ -f "$run/history.json" ] && small+=(-C "$WORK/confirm" "$(basename "$run")/config.json" \
            "$(basename "$run")/environment.json" "$(basename "$run")/history.json")
    done
    ((${#small[@]})) && tar czf "$OUT/results.tar.gz" "${small[@]}"
    ls -l "$OUT"
}

unpack() {  # here: the study into book/results, the published seed's run into runs/book, and that run published
    local files=${1:-} python=${PYTHON:-python} tmp
    [ -d "$files" ] || fail "unpack FILES_AT: name the folder that the search call's files came back in"
    [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python  # torch and erav1, from `make test`
    "$python" -c "import erav1, torch" 2>/dev/null ||
        fail "unpack publishes the run with erav1 and torch, which $python lacks: run 'make venv' first"
    if [ -n "$(ls -A "$BOOK_RUN" 2>/dev/null)" ]; then  # before anything is written: nothing is lost
        fail "$BOOK_RUN holds a run already, and the published run goes there; move it away" \
            "(mv $BOOK_RUN $BOOK_RUN.before) and unpack again"
    fi
    tmp=$(mktemp -d)
    tar xzf "$files/results.tar.gz" -C "$tmp" || fail "$files/results.tar.gz is not a whole archive"
    if [ -f "$tmp/summary.json" ]; then  # checked before anything is written
        cat "$files"/model.part_* >"$tmp/model.pt" 2>/dev/null
        (cd "$tmp" && sha256sum --quiet -c model.sha256 2>/dev/null) ||
            fail "the parts of model.pt in $files do not join to the file that the search call packed"
    fi
    export ERAV1_CIFAR10=${ERAV1_CIFAR10:-$(realpath -q "$SOURCE")}  # `cifar10` for the runs: the official pixels
    [ -f "$tmp/study.db" ] && mkdir -p "$RESULTS/recipe_search" && cp "$tmp/study.db" "$RESULTS/recipe_search/study.db"
    if [ -f "$tmp/summary.json" ]; then
        mkdir -p "$RESULTS/recipe_search/confirm"
        for run in "$tmp"/seed*; do  # each seed's record, named as confirm_recipe.py keeps a seed that ended
            for name in config environment history; do
                cp "$run/$name.json" "$RESULTS/recipe_search/confirm/$(basename "$run").$name.json"
            done
        done
        book_run "$tmp" "$python"
    fi
    rm -rf "$tmp"
    ls -l "$RESULTS" "$RESULTS/recipe_search"
}

book_run() {  # the published seed's run into runs/book, where chapter 3 finds it finished and trains nothing
    local tmp=$1 python=$2 seed changes
    seed=$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['seed'])" "$tmp/summary.json")
    mkdir -p "$BOOK_RUN" "$tmp/published"
    for name in config environment history; do cp "$tmp/seed$seed/$name.json" "$BOOK_RUN/$name.json"; done
    mv "$tmp/model.pt" "$BOOK_RUN/model.pt"
    # Published again here, from the fp32 weights: the fp16 file, summary.json's scores on this machine, and the
    # other seeds, which `erav1 publish` keeps from the summary that came back (same recipe, epochs and images).
    cp "$tmp/summary.json" "$tmp/published/summary.json"
    if ! "$python" -m erav1 publish "$BOOK_RUN" --out "$tmp/published" --device cpu; then
        rm -rf "$BOOK_RUN"  # it was empty before: unpack can run again once the cause is fixed
        fail "erav1 publish $BOOK_RUN failed (its message is above); $BOOK_RUN is empty again"
    fi
    if ! "$python" - "$tmp/summary.json" "$tmp/published/summary.json" <<'EOF'; then
import json, sys
there, here = (json.load(open(path)) for path in sys.argv[1:])
sys.exit([s["seed"] for s in there["seeds"]] != [s["seed"] for s in here["seeds"]]
         or there["test_accuracy"] != here["test_accuracy"])
EOF
        rm -rf "$BOOK_RUN"
        fail "publishing $BOOK_RUN here did not keep the seeds of the summary that came back; $BOOK_RUN is empty again"
    fi
    mv "$tmp/published/resnet18_cifar10.pt" "$RESULTS/resnet18_cifar10.pt"
    mv "$tmp/published/summary.json" "$RESULTS/summary.json"  # last: it names the weights already in place
    changes=$("$python" -c "import json, sys; from erav1.publish import recipe_changes
print(' '.join(f'{k}={v}' for k, v in recipe_changes(json.load(open(sys.argv[1]))).items()))" "$BOOK_RUN/config.json")
    if [ -n "$changes" ]; then
        echo "$BOOK_RUN holds seed $seed. Chapter 3 shows it, and trains nothing, once Config's defaults in" \
            "erav1/main.py (and chapter 3's batch_size) are its recipe: $changes"
    else
        echo "$BOOK_RUN holds seed $seed, trained with Config's defaults: chapter 3 shows it and trains nothing"
    fi
}

case ${1:-} in
    split) split_parts ;;
    wheels) download_wheels ;;
    receive) receive ;;
    search) search ;;
    unpack) unpack "${2:-}" ;;
    *) fail "usage: bash scripts/gpu_search.sh split | wheels | receive | search | unpack FILES_AT (see the top of the script)" ;;
esac
