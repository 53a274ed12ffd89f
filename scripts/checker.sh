#!/usr/bin/env bash
# "Never lose a message": build the release binaries and run the Jepsen-style checker against
# them. It starts a registry and two nodes (A, B) in a temporary directory, sends N numbered
# messages from A to B over A's control socket while killing A and/or B with kill -9 KILLS times
# at random moments, then checks B's inbox: nothing lost, duplicated, reordered or unexpected.
#
#   bash scripts/checker.sh                      # 10 000 messages, 10 kills
#   bash scripts/checker.sh 100000 20            # N KILLS
#   bash scripts/checker.sh 100000 20 --seed 42  # replay a run's random choices
#
# Options after N and KILLS go to the checker (`--help` lists them: --window, --seed, --keep,
# --max-downtime, --drain-timeout, --quiet). Exit status: 0 pass, 1 fail, 2 usage error.
# The directory with both databases and every daemon log is kept (and printed) when a run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-10000}"
kills="${2:-10}"
shift $(( $# < 2 ? $# : 2 ))

echo "building (cargo build --release) ..." >&2
cargo build --release --locked -q -p chatd -p registryd -p chatctl -p peerchat-testkit --bins

exec target/release/checker "$@" "$n" "$kills"
