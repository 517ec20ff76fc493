#!/usr/bin/env bash
# Same-day whole-DAG A/B of two commits: `bash benchmarks/dag_ab.sh OLD NEW [FOLDER]`.
# Each commit gets its own `git worktree` (and so its own DVC cache) under FOLDER (default /tmp/dag_ab) and
# runs its own params from nothing. Stages run one at a time in DAG order, `dvc repro -s <stage>` on one
# side then the other, the side that goes first alternating from stage to stage so that the machine's drift
# over the hour falls on both. Writes FOLDER/times.tsv (stage, side, wall seconds) and FOLDER/{old,new}.log;
# afterwards `git worktree remove --force FOLDER/old FOLDER/new` (each holds a whole DAG's outputs).
# NEW_SHARED=1: the new side runs as `make repro` does since 2026-12-02, every stage joining one local Ray
# runtime (pipeline.distributed.shared_runtime) that lives from its first stage to its last; the runtime's
# start is timed with the first stage and its stop as a row of its own (`shutdown`).
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
shared=${NEW_SHARED:-0} runtime_pid=
run_stage() {  # side stage: `dvc repro -s stage` on that side, as its `make repro` would run it
  local side=$1 stage=$2 status
  if [ "$side" = new ] && [ "$shared" = 1 ]; then
    if [ -z "$runtime_pid" ]; then  # the runtime starts before the first stage, as under `make repro`
      mkfifo "$folder/new.requests" "$folder/new.replies"
      (cd "$folder/new" && python -m pipeline.distributed.shared_runtime -- bash -c \
        'while read -r stage; do dvc repro -s "$stage" >> ../new.log 2>&1; echo $?; done' \
        < "$folder/new.requests" > "$folder/new.replies" 2> "$folder/new.runtime.log") &
      runtime_pid=$!
      exec 3> "$folder/new.requests" 4< "$folder/new.replies"
    fi
    echo "$stage" >&3
    read -r status <&4
    return "$status"
  fi
  (cd "$folder/$side" && dvc repro -s "$stage" >> "$folder/$side.log" 2>&1)
}
timed() {  # stage side command...: appends the command's wall time to times.tsv
  local stage=$1 side=$2 start
  shift 2
  start=$(date +%s.%N)
  "$@"
  printf '%s\t%s\t%.1f\n' "$stage" "$side" "$(echo "$(date +%s.%N) - $start" | bc)" >> "$folder/times.tsv"
}
stop_runtime() { exec 3>&- 4<&-; wait "$runtime_pid"; }
for stage in $stages; do
  if (( i % 2 == 0 )); then order="old new"; else order="new old"; fi
  for side in $order; do
    timed "$stage" "$side" run_stage "$side" "$stage"
  done
  i=$((i + 1))
done
if [ -n "$runtime_pid" ]; then timed shutdown new stop_runtime; fi
awk -F'\t' 'NR > 1 {sum[$2] += $3} END {printf "sum: old %.1f s, new %.1f s, new / old %.3f\n", sum["old"], sum["new"], sum["new"] / sum["old"]}' \
  "$folder/times.tsv"
