#!/usr/bin/env bash
# Ablation on UCM-Captions (train split -> val split), CPU-friendly: the same small model and
# schedule with InfoNCE alone, + momentum/queue distribution matching (BDM), + triplet with the
# intra-class term, and the MiniLM text tower with all three. Re-ranking is logged for every
# run (val_rerank_mR). Each run resumes if interrupted; the table goes to $OUT/summary.md.
#
#   bash training/ucm_ablation.sh                   # defaults below
#   EPOCHS=10 OUT=runs/quick bash training/ucm_ablation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/ucm_captions/dataset.json}
MODEL=${MODEL:-rs-resnet-tiny}
EPOCHS=${EPOCHS:-30}
OUT=${OUT:-runs/ablation}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
COMMON=(--data "$DATA" --epochs "$EPOCHS" --batch-size 64 --lr 1e-3 --warmup-steps 100
        --no-progress --threads "$THREADS")

run() {
    local name=$1
    shift
    local resume=(--overwrite)
    [ -f "$OUT/$name/last.pt" ] && resume=(--resume auto)
    echo "$(date -Is) start $name" >> "$OUT/progress.log"
    "$PY" -m training.fit "${COMMON[@]}" --run-dir "$OUT/$name" "${resume[@]}" "$@" > "$OUT/$name.log" 2>&1
    echo "$(date -Is) done $name" >> "$OUT/progress.log"
    "$PY" -m training.runlog "$OUT"/*/ > "$OUT/summary.md"
}

# The candidate best setup first, so its numbers arrive first on a busy machine.
run infonce-bdm-triplet --model "$MODEL" --bdm-weight 0.1 --triplet-weight 1 --intra-weight 0.1
run infonce --model "$MODEL"
run infonce-bdm --model "$MODEL" --bdm-weight 0.1
run minilm-infonce-bdm-triplet --model rs-resnet-minilm --bdm-weight 0.1 --triplet-weight 1 --intra-weight 0.1 \
    --text-lr-scale 0.1
cat "$OUT/summary.md"
