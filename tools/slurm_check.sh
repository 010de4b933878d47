#!/usr/bin/env bash
# A real Slurm run of the shipped quickstart: starts a private single-node cluster (munged,
# slurmctld, slurmd; no systemd, no cgroups), submits the quickstart as a job array of
# TASKS tasks plus a dependent merge with deploy/slurm/submit.sh, and checks that the merged
# results.json and every file of every sink equal a single-process run's. Every daemon it
# started is stopped by its PID, also when it fails.
#
# usage: tools/slurm_check.sh [TASKS, default 4]
# Needs: target/release/anoflow built (cargo build --release --workspace), ORT_DYLIB_PATH set
# or ONNX Runtime in .cache/onnxruntime/, and Slurm and munge installed; as root on Debian
# it installs them (apt-get install slurm-wlm munge) when missing.
# Environment: SLURM_CHECK_KEEP=1 keeps the state directory (logs, runs) for a look.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tasks=${1:-4}
bin="$root/target/release/anoflow"
[[ -x "$bin" ]] || { echo "slurm_check: $bin is missing: cargo build --release --workspace" >&2; exit 1; }
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ls "$root"/.cache/onnxruntime/libonnxruntime.so.* 2>/dev/null | head -n 1)}"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "slurm_check: Slurm and munge are not installed (as root on Debian: apt-get install slurm-wlm munge)" >&2
        exit 1
    fi
    echo "slurm_check: installing slurm-wlm and munge" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

state=$(mktemp -d /tmp/anoflow-slurm.XXXXXX)
chmod 0755 "$state"
daemon_pids=()
cleanup() {
    local status=$?
    # Every daemon started here, by the PID it had when started (slurmd removes its pid file).
    for pid in "${daemon_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${daemon_pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        for log in "$state"/*.log "$state"/jobs/*.out; do
            [[ -f "$log" ]] && { echo "--- $log"; tail -n 30 "$log"; } >&2
        done
    fi
    if [[ -n "${SLURM_CHECK_KEEP:-}" ]]; then echo "slurm_check: state kept in $state" >&2; else rm -rf "$state"; fi
    exit $status
}
trap cleanup EXIT
# Waits up to $1 seconds for the command that follows to succeed.
wait_for() {
    local limit=$1
    shift
    local start=$SECONDS
    until "$@"; do
        ((SECONDS - start < limit)) || return 1
        sleep 0.2
    done
}

# munged: its own key, socket directory and files, as root.
mkdir -p "$state/munge" && chmod 0755 "$state/munge"
head -c 1024 /dev/urandom > "$state/munge.key" && chmod 0400 "$state/munge.key"
munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge.key" \
    --pid-file="$state/munged.pid" --log-file="$state/munged.log" --seed-file="$state/munged.seed"
wait_for 10 test -s "$state/munged.pid"
daemon_pids+=("$(cat "$state/munged.pid")")

# slurm.conf: private ports, everything under the state directory.
port=$((20000 + RANDOM % 20000))
host=$(hostname)
node=$(slurmd -C | head -n 1)
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<< "$node")
mkdir -p "$state/ctld" "$state/spool" "$state/jobs"
cat > "$state/slurm.conf" <<EOF
ClusterName=anoflowcheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$state/slurm.conf"
slurmctld -f "$SLURM_CONF"
wait_for 20 test -s "$state/slurmctld.pid"
daemon_pids+=("$(cat "$state/slurmctld.pid")")
slurmd -f "$SLURM_CONF"
wait_for 20 test -s "$state/slurmd.pid"
daemon_pids+=("$(cat "$state/slurmd.pid")")
node_idle() { [[ "$(sinfo -h -o %t 2>/dev/null)" == idle* ]]; }
wait_for 60 node_idle || { echo "slurm_check: the node never became idle: $(sinfo 2>&1)" >&2; exit 1; }

# The quickstart, small enough for a 2-core machine, with 4 categories (4 units).
sets=("data.categories=[pill,tiles,woven,washer]" data.train=12 data.test_good=2 data.test_defective=4)
set_args=()
for s in "${sets[@]}"; do set_args+=(-s "$s"); done
run_dir="$state/shared/quickstart"
cd "$state/jobs"
export ANOFLOW_BIN="$bin" ANOFLOW_WORKDIR="$root"
started=$SECONDS
read -r array merge < <("$root/deploy/slurm/submit.sh" -n "$tasks" -p "$root/pipelines/quickstart.yaml" \
    -o "$run_dir" "${set_args[@]}" -- --cpus-per-task=1 --output="$state/jobs/%x-%A_%a.out")
echo "slurm_check: array job $array ($tasks tasks), merge job $merge" >&2
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | sort -u | tr '\n' ' '; }
merge_done() {
    local s
    s=$(job_state "$merge")
    case $s in
        *PENDING* | *RUNNING* | *CONFIGURING* | *COMPLETING* | "") return 1 ;;
        *) return 0 ;;
    esac
}
wait_for 900 merge_done || { echo "slurm_check: the merge job did not finish: $(job_state "$merge")" >&2; exit 1; }
cluster_seconds=$((SECONDS - started))
[[ "$(job_state "$merge")" == "COMPLETED " ]] || {
    echo "slurm_check: merge job $merge: $(job_state "$merge"); array: $(job_state "$array")" >&2
    exit 1
}
echo "slurm_check: array and merge completed in ${cluster_seconds} s" >&2

# The same run in one process, then byte for byte.
single="$state/single"
run_args=()
for s in "${sets[@]}"; do run_args+=(--set "$s"); done
(cd "$root" && "$bin" run pipelines/quickstart.yaml "${run_args[@]}" --out "$single" --cache "$state/single.cache" -q \
    > "$state/single.log" 2>&1)
merged="$run_dir/merged"
compared=0
for sink in eval report; do
    diff -r "$single/$sink" "$merged/$sink" >&2 || { echo "slurm_check: $sink differs from the single run" >&2; exit 1; }
    compared=$((compared + $(find "$single/$sink" -type f | wc -l)))
done
((compared > 20)) || { echo "slurm_check: only $compared files compared" >&2; exit 1; }
echo "slurm_check: ok: $tasks array tasks + merge on Slurm equal the single run ($compared files of eval/ and report/)"
