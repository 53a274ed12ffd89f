#!/usr/bin/env bash
# Network fault suite: bash .ci/netfaults.sh [SCENARIO...]   (run by .ci/run when CI=true)
#
# Every scenario builds its own little network out of network namespaces: a "switch" namespace
# holding a bridge, and one namespace per host (registryd, chatd a, b, c, ...) joined to it by a
# veth pair, on its own subnet 10.231.K.0/24 (K: the scenario's number). Nothing is created in
# this machine's own network namespace, and no packet leaves those namespaces. Faults are made
# with iptables inside a host's namespace (DROP for partitions and silent drops, `-m statistic
# --mode random` for loss: this kernel has no netem) and with testkit's delay-proxy for latency.
#
# The scenarios run concurrently (the longest, a 3-minute partition, sets the wall time). Each
# ends with the same check: every message chatd accepted was delivered exactly once and in
# order (the receiver's inbox, read back with chatctl --json inbox), and how long it took. The
# numbers go to stdout and, with --report FILE, to a Markdown table (docs/faults.md).
#
# Needs root and `ip` and `iptables`; exits 77 (skipped, with the reason) without them. Uses the
# release binaries in target/release (chatd, registryd, chatctl, delay-proxy): build them first
# (cargo build --release -p chatd -p registryd -p chatctl -p peerchat-testkit --bin delay-proxy),
# or set PEERCHAT_BIN=DIR. A trap kills every process it started and deletes every namespace it
# made, on success, failure and Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PEERCHAT_BIN:-$(pwd)/target/release}
ALL_SCENARIOS=(partition30 partition100 partition180 loss5 loss30 delay silentdrop registry move nat)
TAG="pcf$$"
WORK=$(mktemp -d /tmp/peerchat-netfaults.XXXXXX)
REPORT=""

# Most seconds a scenario may take in all (a bound on every wait, so a hang fails rather than
# blocks CI).
SCENARIO_LIMIT=600

usage() { echo "usage: bash .ci/netfaults.sh [--report FILE] [SCENARIO...]; scenarios: ${ALL_SCENARIOS[*]}" >&2; }

scenarios=()
while [ $# -gt 0 ]; do
    case $1 in
    --report) REPORT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *)
        case " ${ALL_SCENARIOS[*]} " in
        *" $1 "*) scenarios+=("$1") ;;
        *) usage; exit 2 ;;
        esac
        shift
        ;;
    esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${ALL_SCENARIOS[@]}")

skip() {
    echo "netfaults: SKIPPED: $*" >&2
    rm -rf "$WORK"
    exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, iptables)"
command -v ip >/dev/null || skip "ip (iproute2) is missing"
command -v iptables >/dev/null || skip "iptables is missing (apt-get install iptables)"
for b in chatd registryd chatctl delay-proxy; do
    [ -x "$BIN/$b" ] || skip "$BIN/$b is missing: cargo build --release -p chatd -p registryd -p chatctl -p peerchat-testkit --bin delay-proxy"
done
if ! ip netns add "$TAG-probe" 2>/dev/null; then skip "cannot create a network namespace here"; fi
if ! ip netns exec "$TAG-probe" iptables -A INPUT -m statistic --mode random --probability 0.5 -j DROP 2>/dev/null; then
    ip netns del "$TAG-probe"
    skip "iptables with -m statistic does not work in a network namespace here"
fi
ip netns del "$TAG-probe"

# ---------------------------------------------------------------------------------------------
# cleanup: every namespace and process this run made is recorded, and removed on any exit.

cleanup() {
    local rc=$? pid ns
    trap - EXIT INT TERM
    set +e
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null; done <"$WORK/pids"
        sleep 0.5
        while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$WORK/pids"
    fi
    for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null; done
    if [ -f "$WORK/namespaces" ]; then
        while read -r ns; do ip netns del "$ns" 2>/dev/null; done <"$WORK/namespaces"
    fi
    # Anything of ours left behind by an earlier crash of this very run's scenarios.
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do ip netns del "$ns" 2>/dev/null; done
    if [ -s "$WORK/failed" ]; then
        echo "netfaults: the daemons' logs of the failed scenarios:" >&2
        while read -r s; do
            for f in "$WORK/$s"/*.log; do
                [ -s "$f" ] || continue
                echo "--- $f (last 15 lines)" >&2
                tail -n 15 "$f" >&2
            done
        done <"$WORK/failed"
    fi
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "netfaults: KEEP_WORK is set: logs and databases are in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# building networks, sending messages and the check: .ci/netfaults-lib.sh
# shellcheck source=.ci/netfaults-lib.sh
. .ci/netfaults-lib.sh

# ---------------------------------------------------------------------------------------------
# the scenarios (each in its own subshell, network and directory)

# The standard network: registry .1, chatd a .11, b .12, c .13.
standard_net() {
    make_switch
    make_host reg "$(net 1)"
    local n i=11
    for n in "$@"; do
        make_host "$n" "$(net $i)"
        i=$((i + 1))
    done
    start_registry
    for n in "$@"; do start_chatd "$n"; done
    wait_registered "$@"
}

# partition SECS: b cut off (all its packets dropped) while a->b, c->b and b->a each send one
# message every 0.5 s; after the heal everything must arrive within 15 s.
scenario_partition() {
    local secs=$1 t_heal
    standard_net a b c
    trickle a b ab
    trickle c b cb
    trickle b a ba
    sleep 5
    log "partition of b for $secs s"
    partition b
    sleep "$secs"
    stop_trickle ab
    stop_trickle cb
    stop_trickle ba
    heal b
    t_heal=$(now)
    log "healed"
    local ok=0
    verify a b ab 15 "a->b" "the heal" "$t_heal" || ok=1
    verify c b cb 15 "c->b" "the heal" "$t_heal" || ok=1
    verify b a ba 15 "b->a" "the heal" "$t_heal" || ok=1
    return $ok
}

# loss P: P (e.g. 0.05) of b's packets dropped at random, both ways; 5000 messages a->b.
scenario_loss() {
    local p=$1 t0 took
    standard_net a b
    # A live link first, so that the measurement is delivery, not the first handshake.
    bulk a b warm 1
    verify a b warm 30 "warm-up" "sending" "$(now)" >/dev/null || return 1
    random_loss b "$p"
    t0=$(now)
    bulk a b ab 5000
    verify a b ab 400 "a->b, $(awk -v p="$p" 'BEGIN { print p * 100 }') % loss" "sending" "$t0" || return 1
    took=$(since "$t0")
    result "throughput: $(awk -v t="$took" 'BEGIN { printf "%.0f", 5000 / t }') messages/s (5000 in $took s)"
    result "$(loss_counts b)"
}

# delay: a->b through delay-proxy (100 ms +- 20 ms each way): b advertises the proxy's address.
scenario_delay() {
    local t0 took
    make_switch
    make_host reg "$(net 1)"
    make_host a "$(net 11)"
    make_host b "$(net 12)"
    make_host dly "$(net 20)"
    start_registry
    in_host dly "$BIN/delay-proxy" "$(net 20):7000" "$(net 12):7000" 100 20 >/dev/null
    start_chatd a
    start_chatd b --advertise "$(net 20):7000"
    wait_registered a b
    bulk a b warm 1
    verify a b warm 30 "warm-up" "sending" "$(now)" >/dev/null || return 1
    # One message there and its ack back, on the live link: at least 2 x 80 ms.
    t0=$(now)
    ctl a send --wait=30 b "one" >/dev/null || { failed "send --wait through the delay proxy"; return 1; }
    result "one message sent and acknowledged (send --wait) in $(since "$t0") s"
    t0=$(now)
    bulk a b ab 5000
    verify a b ab 400 "a->b, 100 ms +- 20 ms each way" "sending" "$t0" || return 1
    took=$(since "$t0")
    result "throughput: $(awk -v t="$took" 'BEGIN { printf "%.0f", 5000 / t }') messages/s (5000 in $took s)"
}

# silentdrop: a's live link to b goes silent (both directions dropped, no RST) for 2 minutes
# while a keeps sending; a must notice (its outbox shows an error) within the ack timeout.
scenario_silentdrop() {
    local t_drop noticed="" i
    standard_net a b
    trickle a b ab
    sleep 5
    drop_between b "$(net 11)"
    t_drop=$(now)
    log "a<->b dropped silently"
    for i in $(seq 1 1200); do
        if ctl a --json outbox --limit 5 2>/dev/null | grep -q '"error":"'; then
            noticed=$(since "$t_drop")
            break
        fi
        sleep 0.1
    done
    if [ -z "$noticed" ]; then failed "a did not notice the dead link within 120 s"; return 1; fi
    result "a noticed the dead link ${noticed} s after the drop (ack timeout 30 s)"
    sleep "$(awk -v n="$noticed" 'BEGIN { r = 120 - n; print (r > 0 ? r : 0) }')"
    stop_trickle ab
    heal b
    local t_back
    t_back=$(now)
    log "link restored"
    verify a b ab 60 "a->b" "the link came back" "$t_back"
}

# registry: the registry unreachable for 2 minutes; a and b keep chatting, c starts during the
# outage and a sends to it; afterwards everything arrives without any operator action.
scenario_registry() {
    standard_net a b
    make_host c "$(net 13)"
    trickle a b ab
    trickle b a ba
    sleep 5
    partition reg
    local t_out
    t_out=$(now)
    log "registry unreachable"
    sleep 20
    start_chatd c
    log "c started during the outage"
    trickle a c ac
    trickle c a ca
    sleep 100
    stop_trickle ab
    stop_trickle ba
    stop_trickle ac
    stop_trickle ca
    heal reg
    local t_back
    t_back=$(now)
    log "registry back after $(since "$t_out") s"
    local ok=0
    verify a b ab 15 "a->b (during the outage)" "the registry came back" "$t_back" || ok=1
    verify b a ba 15 "b->a (during the outage)" "the registry came back" "$t_back" || ok=1
    verify a c ac 90 "a->c (c joined during the outage)" "the registry came back" "$t_back" || ok=1
    verify c a ca 90 "c->a (c joined during the outage)" "the registry came back" "$t_back" || ok=1
    return $ok
}

# move: b's address changes from .12 to .22 while a sends to it; b must be found again within
# one lease renewal (TTL 90 s / 3 = 30 s: b's next renewal comes from the new address) plus
# 15 s for a to notice the dead link and retry.
scenario_move() {
    standard_net a b
    trickle a b ab
    sleep 5
    # Renumbered (as by DHCP): the old address goes, then the new one comes. (Adding first would
    # make the new one a secondary address, which goes away with the primary.)
    ip -n "$(ns b)" addr del "$(net 12)/24" dev eth0
    ip -n "$(ns b)" addr add "$(net 22)/24" dev eth0
    local t_move
    t_move=$(now)
    log "b moved to $(net 22)"
    sleep 2
    stop_trickle ab
    verify a b ab 45 "a->b" "the move" "$t_move" || return 1
    ctl a --json peers | grep -q "$(net 22):7000" || { failed "the registry does not list b at $(net 22)"; return 1; }
    result "b is listed at its new address $(net 22):7000"
}

# nat: n sits behind a NAT router (MASQUERADE); it can reach out, but nobody can reach in, and
# chatctl status and doctor say so.
scenario_nat() {
    make_switch
    make_host reg "$(net 1)"
    make_host a "$(net 11)"
    make_host rtr "$(net 30)"
    # The private side: rtr eth1 10.231.(100+K).1 <-> n eth0 10.231.(100+K).2
    local priv="10.231.$((100 + K))" n
    n=$(ns n)
    ip netns add "$n"
    echo "$n" >>"$WORK/namespaces"
    ip -n "$n" link set lo up
    ip link add eth1 netns "$(ns rtr)" type veth peer name eth0 netns "$n"
    ip -n "$(ns rtr)" addr add "$priv.1/24" dev eth1
    wire_sized "$(ns rtr)" eth1
    wire_sized "$n" eth0
    ip -n "$(ns rtr)" link set eth1 up
    ip -n "$n" addr add "$priv.2/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" route add default via "$priv.1"
    ip netns exec "$(ns rtr)" sysctl -q -w net.ipv4.ip_forward=1
    ip netns exec "$(ns rtr)" iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
    start_registry
    start_chatd a
    start_chatd n
    wait_registered a n
    local seen
    seen=$(ctl n --json status | sed -n -E 's/.*"address":"([^"]*)".*/\1/p')
    result "n (at $priv.2 behind the router) is registered as $seen: the router's address with n's own port"
    trickle n a na
    trickle a n an
    sleep 20
    stop_trickle na
    stop_trickle an
    local ok=0
    verify n a na 30 "n->a (outgoing, through the NAT)" "the last send" "$(now)" || ok=1
    if [ "$(inbox_bodies n a an | wc -l)" = 0 ]; then
        result "a->n: none of $(accepted an) messages delivered (expected: nothing forwards the port); they stay queued: $(ctl a --json outbox --limit 1 | sed -n -E 's/.*"error":"([^"]*)".*/\1/p')"
    else
        failed "a->n: some messages reached n behind the NAT"
        ok=1
    fi
    local status doctor rc=0
    status=$(ctl n status)
    if grep -q "^reachable:  no (behind NAT): the registry sees this node at $(net 30) " <<<"$status"; then
        result "chatctl status on n: $(grep '^reachable:' <<<"$status")"
    else
        failed "chatctl status on n does not say it is behind NAT: $status"
        ok=1
    fi
    doctor=$(ctl n doctor 2>&1) || rc=$?
    if [ "$rc" = 1 ] && grep -q "^FAIL reachable .*behind NAT" <<<"$doctor"; then
        result "chatctl doctor on n: exit 1; $(grep -E '^FAIL|^ *hint' <<<"$doctor" | tr '\n' ' ' | tr -s ' ')"
    else
        failed "chatctl doctor on n (exit $rc) does not report the NAT: $doctor"
        ok=1
    fi
    return $ok
}

run_scenario() {
    local name=$1
    K=$2
    SCENARIO=$name
    DIR="$WORK/$name"
    mkdir -p "$DIR"
    local t0 rc=0
    t0=$(now)
    case $name in
    partition30) scenario_partition 30 ;;
    partition100) scenario_partition 100 ;;
    partition180) scenario_partition 180 ;;
    loss5) scenario_loss 0.05 ;;
    loss30) scenario_loss 0.30 ;;
    delay) scenario_delay ;;
    silentdrop) scenario_silentdrop ;;
    registry) scenario_registry ;;
    move) scenario_move ;;
    nat) scenario_nat ;;
    esac || rc=$?
    echo "scenario took $(since "$t0") s" >>"$DIR/result"
    return $rc
}

# ---------------------------------------------------------------------------------------------

t_start=$(now)
echo "netfaults: ${#scenarios[@]} scenarios concurrently: ${scenarios[*]} (work dir $WORK)"
declare -A pid_of
k=0
for s in "${scenarios[@]}"; do
    k=$((k + 1))
    # Each scenario's number K is its position in ALL_SCENARIOS: a stable subnet per scenario.
    for i in "${!ALL_SCENARIOS[@]}"; do [ "${ALL_SCENARIOS[$i]}" = "$s" ] && k=$((i + 1)); done
    (
        set -euo pipefail
        trap - EXIT
        exec 3>&1
        run_scenario "$s" "$k"
    ) >"$WORK/$s.out" 2>&1 &
    pid_of[$s]=$!
done

# Progress while they run (at most SCENARIO_LIMIT seconds).
deadline=$(($(date +%s) + SCENARIO_LIMIT))
while :; do
    running=0
    for s in "${scenarios[@]}"; do kill -0 "${pid_of[$s]}" 2>/dev/null && running=$((running + 1)); done
    [ "$running" = 0 ] && break
    if [ "$(date +%s)" -gt "$deadline" ]; then
        echo "netfaults: scenarios still running after $SCENARIO_LIMIT s: giving up" >&2
        exit 1
    fi
    sleep 2
done

failures=0
echo
for s in "${scenarios[@]}"; do
    rc=0
    wait "${pid_of[$s]}" || rc=$?
    echo "== $s: $([ "$rc" = 0 ] && echo ok || echo "FAILED (status $rc)")"
    [ -f "$WORK/$s/result" ] && sed 's/^/   /' "$WORK/$s/result"
    if [ "$rc" != 0 ]; then
        failures=$((failures + 1))
        echo "$s" >>"$WORK/failed"
        sed 's/^/   | /' "$WORK/$s.out" | tail -n 20
    fi
done
echo
echo "netfaults: ${#scenarios[@]} scenarios in $(since "$t_start") s, $failures failed"

if [ -n "$REPORT" ]; then
    {
        echo "| scenario | result |"
        echo "|---|---|"
        for s in "${scenarios[@]}"; do
            [ -f "$WORK/$s/result" ] || continue
            while IFS= read -r line; do echo "| $s | $line |"; done <"$WORK/$s/result"
        done
    } >"$REPORT"
fi
[ "$failures" = 0 ]
