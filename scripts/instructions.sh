#!/usr/bin/env bash
# Instructions per message of each chatd (A sends, B receives), counted by valgrind's callgrind:
# unlike seconds, instruction counts barely move with machine noise (repeat runs agree within
# about 3 % for A and 1 % for B), so a change of a few percent in CPU cost can be seen.
#
# It runs `chat-bench --only throughput` (64 B A -> B, MESSAGES messages, default 40000) with
# both chatd under callgrind, then prints instructions per message for each and leaves the
# callgrind files for `callgrind_annotate`. Under valgrind chatd runs ~50x slower, so batches
# are smaller than in a real run: compare builds with each other, not with chat-bench's µs.
#
# Usage: bash scripts/instructions.sh [MESSAGES] [BINDIR] [SIZE]
#   SIZE: body size in bytes (default 64; 16 KiB bodies send MESSAGES/4, as chat-bench does).
#   BINDIR: where chat-bench, chatd, chatctl and registryd are (default: target/release, built
#   first). Needs valgrind (apt-get install -y valgrind).
# Exit codes: 0 ok, 1 the run failed, 2 usage.
set -euo pipefail

messages=${1:-40000}
bindir=${2:-}
size=${3:-64}
case "$messages$size" in '' | *[!0-9]*) echo "usage: $0 [MESSAGES] [BINDIR] [SIZE]" >&2; exit 2 ;; esac
# chat-bench sends a quarter of the messages with bodies of 8 KiB and more.
sent=$messages
[ "$size" -ge 8192 ] && sent=$((messages / 4))
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }
if [ -z "$bindir" ]; then
    cd "$(dirname "$0")/.."
    cargo build --release -p registryd -p chatd -p chatctl -p peerchat-bench >&2
    bindir=target/release
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pc-instr.XXXXXX")
cp "$bindir"/chat-bench "$bindir"/chatctl "$bindir"/registryd "$work"/
cp "$bindir"/chatd "$work"/chatd.real
# chat-bench starts the chatd next to it. This one starts the real chatd under callgrind in
# the background and waits for it: chat-bench ends its daemons with SIGKILL, which would lose
# callgrind's output, so the SIGKILL only reaches this wrapper and the daemons are stopped
# with SIGTERM below (callgrind writes its file when chatd exits).
cat >"$work/chatd" <<EOF
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p.out" --log-file="$work/valgrind.%p.log" "$work/chatd.real" "\$@" &
echo \$! >>"$work/pids"
wait
EOF
chmod +x "$work/chatd"

echo "chat-bench under callgrind: $sent messages of $size B, A -> B (a few minutes)" >&2
if ! "$work/chat-bench" --only throughput --sizes "$size" --rounds 1 --messages "$messages" \
    --no-mosquitto --stall-secs 120 >"$work/bench.txt" 2>"$work/bench.err"; then
    echo "chat-bench failed; see $work/bench.err" >&2
    [ -f "$work/pids" ] && xargs kill -KILL <"$work/pids" 2>/dev/null
    exit 1
fi
xargs kill -TERM <"$work/pids" 2>/dev/null || true
for _ in $(seq 300); do
    alive=0
    while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$work/pids"
    [ "$alive" = 0 ] && break
    sleep 0.2
done
for f in "$work"/callgrind.*.out; do
    name=$(grep -m1 '^cmd:' "$f" | grep -o -- '--name [a-z0-9]*' | cut -d' ' -f2)
    total=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
    if [ -z "$total" ]; then
        echo "no callgrind summary in $f (did chatd exit?)" >&2
        exit 1
    fi
    echo "chatd $name: $((total / sent)) instructions/message ($size B bodies)"
done
echo "callgrind files: $work (callgrind_annotate --inclusive=yes FILE)"
