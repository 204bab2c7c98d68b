#!/usr/bin/env bash
# Slurm job array: one array task per shard, writing to a shared volume; a dependent job merges.
#   sbatch --array=0-15 examples/cluster/slurm-array.sh /shared/plan.toml /shared/synth
#   sbatch --dependency=afterok:<array job id> --wrap \
#     "synfer synth merge /shared/synth/shards/* --out /shared/synth/merged"
# A task that is requeued or resubmitted continues where it stopped (--resume); shards are
# independent, so any subset can be rerun.
#SBATCH --job-name=synfer-synth
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=12:00:00
#SBATCH --requeue
set -euo pipefail
plan=$1 out=$2
i=${SLURM_ARRAY_TASK_ID}
n=${SLURM_ARRAY_TASK_COUNT}
srun synfer synth --plan "$plan" --out "$out/shards/$i" --shard "$i/$n" --resume
