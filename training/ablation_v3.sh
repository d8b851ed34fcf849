#!/usr/bin/env bash
# The lever ablation behind the 224 px rs-default (training/README.md, "Ablation"): the shipped 128 px
# recipe on a 4-epoch schedule, one lever changed per run; val mR (plain and re-ranked), tag
# precision@10 and AID zero-shot top-1 per epoch in runs/ablation-v3/<run>/metrics.csv.
#   bash training/ablation_v3.sh [SHARED]   (about 6 minutes a run on an idle 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-../shared}
UCM=$SHARED/data/ucm_captions/dataset.json
TAGS=$SHARED/data/ucm_captions/multilabels.tsv
AID=$SHARED/data/aid/images
BASE=(--data "$UCM" --model rs-effnetlite0-minilm --lock-image --unlocked-image-groups 6 --image-lr-scale 0.3
      --lock-text --epochs 4 --batch-size 64 --lr 1e-3 --warmup-steps 30 --threads 2 --no-progress
      --tags "$TAGS" --data-folder "$AID" --folder-weight 0)
run() { local name=$1; shift
  [ -f "runs/ablation-v3/$name/best.pt" ] || .venv/bin/python -m training.fit "${BASE[@]}" --run-dir "runs/ablation-v3/$name" --overwrite "$@"; }
run base
run tags1 --tag-captions 1
run aid05 --folder-weight 0.5
run triplet --triplet-weight 0.5 --intra-weight 0.1
run text2 --unlocked-text-layers 2 --text-lr-scale 0.05
run groups10 --unlocked-image-groups 10
.venv/bin/python -m training.runlog runs/ablation-v3/*/ > runs/ablation-v3/summary.md
