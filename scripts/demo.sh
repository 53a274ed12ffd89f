#!/usr/bin/env bash
# Quick start: build peerchat and bring up a local network on embedded defaults — a registry and
# three nodes (alice, bob, carol) on free loopback ports in a temporary directory, no root, no systemd —
# send a first message through it, and print how to continue and how to stop.
#
#   bash scripts/demo.sh            # start
#   bash scripts/demo.sh --lan      # start; the nodes also find each other by DNS-SD on loopback
#   bash scripts/demo.sh stop DIR   # stop the network started in DIR
#
# Why --lan is not the default: the demo must send nothing off the machine. With
# `--lan --lan-interface lo` no mDNS leaves loopback (tested: chatd/tests/it/lan.rs), but the
# mdns-sd crate (0.21) joins the mDNS multicast group on every interface as it starts, before the
# interface selection applies, and the kernel reports each join (and the leave right after) with
# an IGMP/MLD membership report on that interface's network. Harmless on a home LAN, but traffic;
# so it is opt-in (see docs/protocol.md 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "stop" ]]; then
    dir="${2:?usage: demo.sh stop DIR}"
    [[ -f "$dir/pids" ]] || { echo "no pids file in $dir" >&2; exit 1; }
    kill -TERM $(cat "$dir/pids") 2>/dev/null || true
    echo "stopped the peerchat demo in $dir"
    exit 0
fi

lan=()
if [[ "${1:-}" == "--lan" ]]; then
    # DNS-SD on loopback only: the three nodes, which listen on 127.0.0.1, hear each other.
    lan=(--lan --lan-interface lo)
elif [[ -n "${1:-}" ]]; then
    echo "usage: bash scripts/demo.sh [--lan] | bash scripts/demo.sh stop DIR" >&2
    exit 2
fi

# registryd's etcd store comes from the etcd-client crate, whose build script needs protoc.
if ! command -v protoc >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing protoc (Debian's protobuf-compiler), which the etcd-client crate's build needs ..." >&2
        (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null) \
            || { echo "demo: could not install protobuf-compiler; install protoc and run this again" >&2; exit 1; }
    else
        echo "demo: building needs protoc (for registryd's etcd store): install it (Debian: sudo apt-get install protobuf-compiler) and run this again" >&2
        exit 1
    fi
fi

echo "building (cargo build --release) ..." >&2
cargo build --release --locked --bins -q
bin="$PWD/target/release"
dir="$(mktemp -d "${TMPDIR:-/tmp}/peerchat-demo.XXXXXX")"
: > "$dir/pids"

fail() {
    echo "demo: $*" >&2
    echo "logs are in $dir" >&2
    kill -TERM $(cat "$dir/pids") 2>/dev/null || true
    exit 1
}

# Polls (up to 10 s) until "$@" succeeds.
wait_until() {
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

setsid "$bin/registryd" --listen 127.0.0.1:0 --db "$dir/registry.db" >/dev/null 2>"$dir/registryd.log" </dev/null &
echo $! >> "$dir/pids"
wait_until grep -q "registryd ready" "$dir/registryd.log" || fail "registryd did not start"
registry="$(grep -o 'listen=[^ ]*' "$dir/registryd.log" | head -1 | cut -d= -f2)"

for name in alice bob carol; do
    # With --lan the nodes also announce themselves with DNS-SD (a registry record still wins).
    setsid "$bin/chatd" --name "$name" --listen 127.0.0.1:0 --registry "$registry" ${lan[@]+"${lan[@]}"} \
        --socket "$dir/$name.sock" --db "$dir/$name.db" >/dev/null 2>"$dir/$name.log" </dev/null &
    echo $! >> "$dir/pids"
done
for name in alice bob carol; do
    wait_until "$bin/chatctl" --socket "$dir/$name.sock" status || fail "chatd $name did not start"
done

ctl() { local who="$1"; shift; "$bin/chatctl" --socket "$dir/$who.sock" "$@"; }

# Polls (up to 10 s) until NODE's inbox holds at least N messages.
wait_inbox() {
    for _ in $(seq 1 100); do
        [[ "$(ctl "$1" --json inbox | wc -l)" -ge "$2" ]] && return 0
        sleep 0.1
    done
    fail "messages did not arrive at $1"
}

ctl alice send bob "hello bob, this is alice" >/dev/null
ctl alice group create friends bob carol >/dev/null
ctl alice send @friends "dinner at eight?" >/dev/null
ctl carol broadcast "carol here, hi all" >/dev/null
wait_inbox bob 3
wait_inbox carol 1
wait_inbox alice 1
bob_inbox="$(ctl bob inbox)"
alice_inbox="$(ctl alice inbox)"
groups="$(ctl alice group list)"

cat <<EOT
peerchat is running in $dir
  registry  $registry
  alice     socket $dir/alice.sock
  bob       socket $dir/bob.sock
  carol     socket $dir/carol.sock

alice sent bob a first message, then one to her group ($groups);
carol broadcast to everyone. bob's inbox:
$bob_inbox
alice's inbox:
$alice_inbox

Continue as alice:
  export PATH="$bin:\$PATH"
  export CHATD_SOCKET="$dir/alice.sock"
  chatctl send bob "how are you?"
  chatctl send @friends "see you"
  chatctl broadcast "hello everyone"
  chatctl peers
  CHATD_SOCKET="$dir/bob.sock" chatctl inbox --follow

Stop everything:
  bash scripts/demo.sh stop "$dir"
EOT
