# Functions of .ci/netfaults.sh (sourced by it; not a program of its own): building a scenario's
# network out of namespaces, making faults, sending messages and checking what arrived. They run
# inside a scenario's subshell, where run_scenario has set K (the scenario's number: its subnet),
# DIR (its directory) and SCENARIO; TAG, WORK and BIN come from netfaults.sh.

# ---------------------------------------------------------------------------------------------
# building networks (functions used inside a scenario's subshell; $K, $DIR set by run_scenario)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[%s %s] %s\n' "$SCENARIO" "$(date +%T)" "$*" >>"$DIR/progress"; }

ns() { echo "$TAG-$K-$1"; }

# The switch: a namespace with a bridge that the hosts' veth pairs plug into.
make_switch() {
    local sw
    sw=$(ns sw)
    ip netns add "$sw"
    echo "$sw" >>"$WORK/namespaces"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
}

# make_host NAME IP: a namespace with eth0 (IP/24) plugged into the switch.
make_host() {
    local name=$1 addr=$2 h sw
    h=$(ns "$name")
    sw=$(ns sw)
    ip netns add "$h"
    echo "$h" >>"$WORK/namespaces"
    ip -n "$h" link set lo up
    ip link add eth0 netns "$h" type veth peer name "p-$name" netns "$sw"
    ip -n "$sw" link set "p-$name" master br0 up
    ip -n "$h" addr add "$addr/24" dev eth0
    wire_sized "$h" eth0
    ip -n "$h" link set eth0 up
}

# veth devices pass 64 KB TCP super-packets (GSO) by default: one "packet" dropped by iptables
# would then be dozens on a real wire. One segment per packet makes loss per wire packet.
wire_sized() { ip -n "$1" link set "$2" gso_max_segs 1 gso_max_size 1500; }

net() { echo "10.231.$K.$1"; }

# Starts a daemon in host NAME's namespace; logs to $DIR/NAME.log.
in_host() {
    local name=$1
    shift
    ip netns exec "$(ns "$name")" "$@" </dev/null >>"$DIR/$name.log" 2>&1 &
    echo $! >>"$WORK/pids"
    echo $!
}

start_registry() {
    in_host reg "$BIN/registryd" --listen "$(net 1):8888" --db "$DIR/registry.db" --log-level info "$@" >/dev/null
    wait_port reg "$(net 1)" 8888
}

# start_chatd NAME [chatd options]: peer port 7000, control socket $DIR/NAME.sock.
start_chatd() {
    local name=$1
    shift
    in_host "$name" "$BIN/chatd" --name "$name" --listen 0.0.0.0:7000 --registry "$(net 1):8888" \
        --socket "$DIR/$name.sock" --db "$DIR/$name.db" "$@" >"$DIR/$name.pid"
    local i
    for i in $(seq 1 200); do
        ctl "$name" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "chatd $name did not answer within 20 s" >&2
    return 1
}

wait_port() {
    local name=$1 addr=$2 port=$3 i
    for i in $(seq 1 200); do
        ip netns exec "$(ns "$name")" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$name: nothing listens on $addr:$port after 20 s" >&2
    return 1
}

ctl() {
    local name=$1
    shift
    "$BIN/chatctl" --socket "$DIR/$name.sock" "$@"
}

# wait_registered NAME...: until each of these nodes has registered (its status shows an address).
wait_registered() {
    local n i
    for n in "$@"; do
        for i in $(seq 1 300); do
            ctl "$n" --json status 2>/dev/null | grep -q '"address":"[0-9]' && break
            sleep 0.1
        done
    done
}

# Silent faults in host NAME's namespace: packets vanish (no RST, no ICMP).
partition() { ip netns exec "$(ns "$1")" iptables -I INPUT -i eth0 -j DROP && ip netns exec "$(ns "$1")" iptables -I OUTPUT -o eth0 -j DROP; }
heal() { ip netns exec "$(ns "$1")" iptables -F INPUT && ip netns exec "$(ns "$1")" iptables -F OUTPUT; }
# drop_between NAME IP: only the traffic between host NAME and IP.
drop_between() { ip netns exec "$(ns "$1")" iptables -I INPUT -s "$2" -j DROP && ip netns exec "$(ns "$1")" iptables -I OUTPUT -d "$2" -j DROP; }
random_loss() {
    ip netns exec "$(ns "$1")" iptables -I INPUT -i eth0 -m statistic --mode random --probability "$2" -j DROP
    ip netns exec "$(ns "$1")" iptables -I OUTPUT -o eth0 -m statistic --mode random --probability "$2" -j DROP
}

# What the random DROP rules in host NAME's namespace dropped, against what crossed eth0.
loss_counts() {
    local h dropped_in dropped_out rx tx
    h=$(ns "$1")
    dropped_in=$(ip netns exec "$h" iptables -L INPUT -v -x -n | awk '/statistic/ { s += $1 } END { print s + 0 }')
    dropped_out=$(ip netns exec "$h" iptables -L OUTPUT -v -x -n | awk '/statistic/ { s += $1 } END { print s + 0 }')
    rx=$(ip netns exec "$h" cat /sys/class/net/eth0/statistics/rx_packets)
    tx=$(ip netns exec "$h" cat /sys/class/net/eth0/statistics/tx_packets)
    echo "iptables dropped $dropped_in of $rx packets b received and $dropped_out of $((tx + dropped_out)) it sent"
}

# ---------------------------------------------------------------------------------------------
# messages and the check

# A sender loop: sends "FLOW-1", "FLOW-2", ... from FROM to TO, one every 0.5 s, until the file
# $DIR/stop-FLOW exists; each message chatd accepted (exit 0) is counted in $DIR/FLOW.accepted.
trickle() {
    local from=$1 to=$2 flow=$3 i=0
    : >"$DIR/$flow.accepted"
    (
        while [ ! -e "$DIR/stop-$flow" ] && [ "$i" -lt 2000 ]; do
            i=$((i + 1))
            if ctl "$from" send "$to" "$flow-$i" >/dev/null 2>>"$DIR/$flow.send-errors"; then
                echo "$i" >>"$DIR/$flow.accepted"
            else
                # Not accepted: the same number again, so accepted bodies stay consecutive.
                i=$((i - 1))
            fi
            sleep 0.5
        done
    ) &
    echo $! >"$DIR/$flow.trickle-pid"
}

stop_trickle() {
    local flow=$1
    touch "$DIR/stop-$flow"
    wait "$(cat "$DIR/$flow.trickle-pid")" 2>/dev/null || true
}

accepted() { wc -l <"$DIR/$1.accepted" | tr -d ' '; }

# bulk FROM TO FLOW N: N messages through one `chatctl send -l` (each line a message).
bulk() {
    local from=$1 to=$2 flow=$3 n=$4
    seq 1 "$n" | sed "s/^/$flow-/" | ctl "$from" send -l "$to" >/dev/null
    seq 1 "$n" >"$DIR/$flow.accepted"
}

# inbox_bodies TO FROM FLOW: the FLOW message bodies from FROM in TO's inbox, oldest first.
inbox_bodies() {
    local to=$1 from=$2 flow=$3
    ctl "$to" --json inbox --from "$from" --limit 10000 |
        sed -n -E "s/.*\"body\":\"($flow-[0-9]+)\".*/\1/p"
}

# wait_delivered FROM TO FLOW LIMIT_S T0: until TO's inbox holds all accepted FLOW messages
# from FROM; prints the seconds since T0 (a `now` timestamp). Fails LIMIT_S after T0.
wait_delivered() {
    local from=$1 to=$2 flow=$3 limit=$4 t0=$5 n want
    want=$(accepted "$flow")
    while :; do
        n=$(inbox_bodies "$to" "$from" "$flow" | sort -u | wc -l)
        [ "$n" -ge "$want" ] && { since "$t0"; return 0; }
        if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            since "$t0"
            return 1
        fi
        sleep 0.5
    done
}

# check_flow FROM TO FLOW: exactly once and in order. Prints "N ok" or what is wrong.
check_flow() {
    local from=$1 to=$2 flow=$3 want
    want=$(accepted "$flow")
    inbox_bodies "$to" "$from" "$flow" | awk -v want="$want" -v flow="$flow" '
        { n = substr($0, length(flow) + 2) + 0; count[n]++; seen++
          if (n <= last) disorder++
          last = n }
        END {
            for (i = 1; i <= want; i++) { if (!(i in count)) missing++; else if (count[i] > 1) dup += count[i] - 1 }
            if (missing + dup + disorder == 0 && seen == want) { printf "%d messages exactly once, in order", want; exit 0 }
            printf "FAILED: %d accepted, %d received, %d missing, %d duplicated, %d out of order", want, seen, missing, dup, disorder
            exit 1
        }'
}

# result "metric text": one line of the scenario's report.
result() { echo "$*" >>"$DIR/result"; log "$*"; }
failed() { echo "FAILED: $*" >>"$DIR/result"; log "FAILED: $*"; return 1; }

# verify FROM TO FLOW LIMIT_S LABEL EVENT T0: wait for delivery (at most LIMIT_S after T0, the
# time of EVENT), then the exactly-once check.
verify() {
    local from=$1 to=$2 flow=$3 limit=$4 label=$5 event=$6 t0=$7 took check
    if ! took=$(wait_delivered "$from" "$to" "$flow" "$limit" "$t0"); then
        check=$(check_flow "$from" "$to" "$flow" || true)
        failed "$label: not all delivered within ${limit} s: $check"
        return 1
    fi
    check=$(check_flow "$from" "$to" "$flow") || { failed "$label: $check"; return 1; }
    result "$label: $check, all delivered ${took} s after $event"
}

