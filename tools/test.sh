#!/usr/bin/env bash
# The project's test command: set-up, build every crate (plugins included, so the
# end-to-end tests find the real libraries next to the binary), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(tools/fetch_onnxruntime.sh)}"
# One build of libraries, binaries, tests and examples (what `cargo test` builds) together:
# dependencies are resolved once with the test targets' features, so `cargo test` below reuses
# every artifact instead of building the shared dependencies a second time with other features
# (the plugin libraries and the binary the end-to-end tests load are the ones built here).
cargo build --release --workspace --lib --bins --tests --examples
cargo test --release --workspace
tools/check_new_plugin.sh

# The visual report of a small quickstart run must render in a real browser; the run and the
# screenshots of its main and category pages stay in target/report-check/ (CI artifacts).
report_run=target/report-check/quickstart
rm -rf "$report_run"
target/release/anoflow run pipelines/quickstart.yaml -q --no-cache --out "$report_run" \
    --set 'data.categories=[pill]' --set data.train=15 --set data.test_good=3 --set data.test_defective=6 >/dev/null
tools/check_report_html.sh "$report_run/report"
echo "report-render: 1 passed, 0 failed"

# A real Slurm cluster (private, single node, daemons stopped by PID): the quickstart as a
# 4-task job array plus a dependent merge equals a single run (about 1 minute, plus ~35 s to
# install slurm-wlm and munge on a fresh machine).
if command -v slurmctld >/dev/null || { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }; then
    tools/slurm_check.sh 4
else
    echo "slurm-check: skipped (Slurm is not installed, and installing it needs root and apt-get)"
fi
