#!/usr/bin/env bash
# Submits a sharded anoflow run to Slurm: a job array of TASKS tasks (anoflow-task.sbatch)
# and a merge job (anoflow-merge.sbatch) that starts once every task succeeded.
#
# usage: deploy/slurm/submit.sh -n TASKS -p PIPELINE -o RUN_DIR [-c CACHE_DIR] [-m MERGE_DIR]
#            [-s PATH=VALUE]... [-b category|sample] [-- SBATCH_ARGS...]
#
# TASKS: with -b category (the default) at most the number of units, i.e. categories of the
# test split times sweep variants (MVTec AD's 15 categories: -n 15). RUN_DIR and CACHE_DIR
# must be on a filesystem every node mounts at the same path. SBATCH_ARGS go to both jobs
# (e.g. -- --partition=gpu --time=02:00:00). To re-run failed tasks by index:
#   deploy/slurm/submit.sh ... -a 3,7   (runs only tasks 3 and 7 of TASKS, then the merge)
# Prints the two job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '5,7p' "$0" >&2; exit 2; }
tasks="" pipeline="" run_dir="" cache_dir="" merge_dir="" by=category only="" sets=()
while getopts "n:p:o:c:m:s:b:a:h" opt; do
    case $opt in
        n) tasks=$OPTARG ;;
        p) pipeline=$OPTARG ;;
        o) run_dir=$OPTARG ;;
        c) cache_dir=$OPTARG ;;
        m) merge_dir=$OPTARG ;;
        s) sets+=("$OPTARG") ;;
        b) by=$OPTARG ;;
        a) only=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ -n "$tasks" && -n "$pipeline" && -n "$run_dir" ]] || usage
[[ "$tasks" =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: -n $tasks: expected a positive number of tasks" >&2; exit 2; }

abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
export ANOFLOW_PIPELINE; ANOFLOW_PIPELINE=$(abs "$pipeline")
export ANOFLOW_RUN_DIR; ANOFLOW_RUN_DIR=$(abs "$run_dir")
export ANOFLOW_CACHE_DIR; ANOFLOW_CACHE_DIR=$(abs "${cache_dir:-$run_dir.cache}")
export ANOFLOW_MERGE_DIR; ANOFLOW_MERGE_DIR=$(abs "${merge_dir:-$run_dir/merged}")
export ANOFLOW_SHARD_BY=$by
export ANOFLOW_WORKDIR=${ANOFLOW_WORKDIR:-$PWD}
ANOFLOW_SET=$(printf '%s\n' ${sets[@]+"${sets[@]}"})
export ANOFLOW_SET

# A task's count is its array's size (SLURM_ARRAY_TASK_COUNT): an array re-running only some
# indices is smaller, so it passes the run's count explicitly (anoflow-task.sbatch then gives
# --shard INDEX/COUNT).
if [[ -n "$only" ]]; then
    array="--array=$only"
    export ANOFLOW_SHARD_COUNT=$tasks
else
    array="--array=0-$((tasks - 1))"
    unset ANOFLOW_SHARD_COUNT
fi
# --export=ALL: the variables above (overrides may hold commas) reach every task.
job=$(sbatch --parsable --export=ALL "$array" "$@" "$here/anoflow-task.sbatch")
job=${job%%;*}
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$job" --kill-on-invalid-dep=yes "$@" \
    "$here/anoflow-merge.sbatch")
merge=${merge%%;*}
echo "$job $merge"
