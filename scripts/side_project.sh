#!/bin/bash
# Run ablation cells with some params overridden, in a side project folder, without touching the main
# workspace: the folder gets a copy of params.yaml with the overrides, links to the main checkout's data
# and models for every stage it does not rerun (unless the folder already has them), then runs those
# stages, the cells, `evaluate` and `report`. The measurements in
# docs/results/{regime-screen,gta5-3seeds,synthia-3seeds,per-domain-3seeds,gta5-batch,synthia-batch,adapt-length}/
# were made with it.
# Cells whose metrics file exists are skipped, so a stopped run resumes.
# Run one side project at a time on a small host: each runs its own local Ray runtime, and two of them
# give their cells 2 × `distributed.cpus_per_worker` torch threads on the same cores (on 2 cores, 6–8× slower
# a step than one alone, 2026-12-07); inside one runtime (`stages.adapt_all`) Ray schedules cells by CPUs.
#
# Usage: scripts/side_project.sh FOLDER "stages" "rows" "seeds" [key=value ...]
#   stages: any of "preprocess warmup pseudo_label" to rerun in the folder ("" = reuse the main ones)
#   e.g. scripts/side_project.sh /tmp/runs/lr0.001 "" "base dass" "0" adapt.lr=0.001
#        scripts/side_project.sh /tmp/runs/synthia "preprocess warmup pseudo_label" \
#          "base fc fc_bc dyn_nocal dass" "0 1 2" data.source.name=synthia warmup.oracle=false
# Needs `dvc repro pseudo_label` done in the main checkout (for whatever the folder reuses).
set -euo pipefail
F=$1; STAGES=$2; ROWS=$3; SEEDS=$4; shift 4
MAIN=$(cd "$(dirname "$0")/.." && pwd)
has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p "$F/models" "$F/data/shards"
cp "$MAIN/params.yaml" "$F/params.yaml"
# Links only what the folder does not have yet, so a folder prepared with another source's data keeps it.
link() { [ -e "$2" ] || [ -L "$2" ] || ln -s "$1" "$2"; }
link "$MAIN/data/raw" "$F/data/raw"
has preprocess || for s in source target_train target_val; do link "$MAIN/data/shards/$s" "$F/data/shards/$s"; done
has warmup || link "$MAIN/models/warmup.pt" "$F/models/warmup.pt"
has pseudo_label || {
  link "$MAIN/data/shards/pseudo_static" "$F/data/shards/pseudo_static"
  for m in pseudo_labeller.pt source_only_target_bn.pt; do link "$MAIN/models/$m" "$F/models/$m"; done
}
preset="$F/preset.yaml"
: > "$preset"
for kv in "$@"; do echo "${kv%%=*}: ${kv#*=}" >> "$preset"; done
echo "ablation.rows: [$(echo $ROWS | tr ' ' ',')]" >> "$preset"
echo "ablation.seeds: [$(echo $SEEDS | tr ' ' ',')]" >> "$preset"
cd "$MAIN"
export PATH="$MAIN/.venv/bin:$PATH"
python scripts/apply_preset.py "$preset" --params "$F/params.yaml"
for stage in $STAGES; do
  [ -f "$F/.done_$stage" ] || { python -m "stages.$stage" --params "$F/params.yaml" > "$F/$stage.log" 2>&1 && touch "$F/.done_$stage"; }
done
# The oracle trains on target labels only, so a folder with its own warmup (warmup.oracle: false) shares
# the main one; linked after the warmup, which writes a marker into models/oracle when it is off.
[ -e "$F/models/oracle/oracle.pt" ] || { rm -rf "$F/models/oracle"; ln -sfn "$MAIN/models/oracle" "$F/models/oracle"; }
for seed in $SEEDS; do for row in $ROWS; do
  [ -f "$F/metrics/adapt/${row}_seed${seed}.json" ] ||
    python -m stages.adapt --params "$F/params.yaml" --row "$row" --seed "$seed" > "$F/adapt_${row}_${seed}.log" 2>&1 ||
    echo "cell $row seed $seed failed: $F/adapt_${row}_${seed}.log"
done; done
python -m stages.evaluate --params "$F/params.yaml" > "$F/evaluate.log" 2>&1
python -m stages.report --params "$F/params.yaml" > "$F/report.log" 2>&1
echo "done: $F/reports/ablation.md"
