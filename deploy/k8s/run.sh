#!/usr/bin/env bash
# Runs a sharded anoflow run on Kubernetes: the shared volume, the Indexed Job, then (once
# every index completed) the merge Job. Kubernetes Jobs have no dependency between them, so
# this script waits. Use the namespace of your current kubectl context, or pass -n NS.
#
# usage: deploy/k8s/run.sh [-n NAMESPACE] [TIMEOUT, default 24h]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=()
if [[ "${1:-}" == "-n" ]]; then ns=(-n "$2"); shift 2; fi
timeout=${1:-24h}

kubectl "${ns[@]}" apply -f "$here/pvc.yaml"
kubectl "${ns[@]}" apply -f "$here/tasks-job.yaml"
# A failed Job (an index out of retries) ends the wait with an error: the merge is not started.
kubectl "${ns[@]}" wait --for=condition=complete --timeout="$timeout" job/anoflow-tasks
kubectl "${ns[@]}" apply -f "$here/merge-job.yaml"
kubectl "${ns[@]}" wait --for=condition=complete --timeout=1h job/anoflow-merge
kubectl "${ns[@]}" logs job/anoflow-merge
