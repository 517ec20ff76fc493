#!/usr/bin/env bash
# Same-day whole-DAG A/B of two commits: `bash benchmarks/dag_ab.sh OLD NEW [FOLDER]`.
# Each commit gets its own `git worktree` (and so its own DVC cache) under FOLDER (default /tmp/dag_ab) and
# runs its own params from nothing. Stages run one at a time in DAG order, `dvc repro -s <stage>` on one
# side then the other, the side that goes first alternating from stage to stage so that the machine's drift
# over the hour falls on both. Writes FOLDER/times.tsv (stage, side, wall seconds) and FOLDER/{old,new}.log;
# afterwards `git worktree remove --force FOLDER/old FOLDER/new` (each holds a whole DAG's outputs).
set -euo pipefail
old=$1 new=$2 folder=${3:-/tmp/dag_ab}
root=$(git rev-parse --show-toplevel)
export PATH=$root/.venv/bin:$PATH DVC_NO_ANALYTICS=1 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$folder"
git -C "$root" worktree add -q "$folder/old" "$old"
git -C "$root" worktree add -q "$folder/new" "$new"
stages=$(cd "$folder/new" && dvc stage list | awk '{print $1}')
[ "$stages" = "$(cd "$folder/old" && dvc stage list | awk '{print $1}')" ] || { echo "the DAGs differ"; exit 1; }
printf 'stage\tside\twall_s\n' > "$folder/times.tsv"
i=0
for stage in $stages; do
  if (( i % 2 == 0 )); then order="old new"; else order="new old"; fi
  for side in $order; do
    start=$(date +%s.%N)
    (cd "$folder/$side" && dvc repro -s "$stage" >> "$folder/$side.log" 2>&1)
    printf '%s\t%s\t%.1f\n' "$stage" "$side" "$(echo "$(date +%s.%N) - $start" | bc)" >> "$folder/times.tsv"
  done
  i=$((i + 1))
done
awk -F'\t' 'NR > 1 {sum[$2] += $3} END {printf "sum: old %.1f s, new %.1f s, new / old %.3f\n", sum["old"], sum["new"], sum["new"] / sum["old"]}' \
  "$folder/times.tsv"
