#!/usr/bin/env bash
# Runs a plan as N independent shard processes on this machine, then merges them: the same
# layout a cluster job produces on a shared volume.
#   bash examples/cluster/local.sh PLAN OUT N
set -euo pipefail
plan=$1 out=$2 n=$3
synfer=${SYNFER_BIN:-target/release/synfer}
pids=()
for ((i = 0; i < n; i++)); do
  "$synfer" synth --plan "$plan" --out "$out/shards/$i" --shard "$i/$n" --resume &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
shards=()
for ((i = 0; i < n; i++)); do shards+=("$out/shards/$i"); done
"$synfer" synth merge "${shards[@]}" --out "$out/merged"
