#!/usr/bin/env bash
# The install test under a real systemd: bash .ci/systemd-test.sh (run by .ci/run when CI=true).
#
# 1. builds the .deb (packaging/build-deb.sh) on this machine;
# 2. makes a throwaway Debian root with debootstrap (minbase + systemd, dbus, adduser) from the
#    distribution's mirror as apt uses it, cached under /var/tmp/peerchat-ci (never modified once
#    made: containers run on a tmpfs overlay of it, so concurrent runs can share it);
# 3. boots it with systemd-nspawn (its own PID 1, private network, --volatile=overlay) and enters
#    it with nsenter to run .ci/install-test.sh there: with systemd as PID 1 that script takes its
#    real-systemd path (Type=notify, the sandbox, RuntimeDirectory=, the socket group, restart,
#    stop within TimeoutStopSec, the journal, upgrade, remove, purge);
# 4. powers the container off and removes everything it made except the cached root, also on
#    failure.
#
# Never boots systemd against this machine's own root: its tmpfiles service would clean this
# machine's /tmp and /var/tmp. Only the debootstrapped root is booted.
#
# Needs root, systemd-nspawn (systemd-container) and debootstrap; exits 77 if they are missing so
# that .ci/run can fall back to the emulated install test. PEERCHAT_DEB=FILE skips step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,adduser
# PEERCHAT_CI_CACHE: another cache directory (e.g. to try a fresh debootstrap).
CACHE=${PEERCHAT_CI_CACHE:-/var/tmp/peerchat-ci}
ROOT="$CACHE/$SUITE-systemd-root"
STAMP="$ROOT.stamp"
STAMP_TEXT="debootstrap --variant=minbase --include=$INCLUDE $SUITE (v1)"
MACHINE="peerchat-ci-$$"
WORK=$(mktemp -d /tmp/peerchat-systemd-test.XXXXXX)

step() { printf '\n== systemd-test: %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
fail() {
    printf 'systemd-test: FAIL: %s\n' "$*" >&2
    exit 1
}

if [ "${CI:-}" != true ] && [ "${PEERCHAT_INSTALL_TEST:-}" != 1 ]; then
    echo "systemd-test: run it with CI=true or PEERCHAT_INSTALL_TEST=1 (it boots a container as root)" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || fail "must run as root (debootstrap, systemd-nspawn)"
for tool in systemd-nspawn debootstrap nsenter; do
    if ! command -v "$tool" >/dev/null; then
        echo "systemd-test: $tool is missing (apt-get install systemd-container debootstrap)" >&2
        exit 77
    fi
done

# The first plain Debian suite (not -security/-updates) apt uses: one-line .list files and deb822
# .sources files. Falls back to deb.debian.org.
apt_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) !~ /-/) { print $i; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = $i
                    if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) suites = $i
                    if ($i ~ /^Enabled:[ \t]*no/) enabled = "no"
                }
                split(uris, u, /[ \t]+/)
                if (enabled == "yes" && types ~ /[ \t]deb([ \t]|$)/ && suites ~ /[ \t][a-z]+([ \t]|$)/) { print u[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}

nspawn_pid=""
init_pid=""

# PID 1 of the container: the child of systemd-nspawn whose pid in its own namespace is 1, once
# it runs systemd. (Before its exec it is still nspawn setting up the container: entering it then
# would enter this machine's own root.)
find_init() {
    local c
    for c in $(pgrep -P "$nspawn_pid" 2>/dev/null || true); do
        if [ "$(awk '/^NSpid:/ { print $NF }' "/proc/$c/status" 2>/dev/null)" = 1 ] &&
            [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

inside() {
    nsenter -t "$init_pid" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb "$@"
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        if [ "$rc" != 0 ] && [ -n "$init_pid" ]; then
            echo "--- the container's journal (last 60 lines):" >&2
            inside journalctl --no-pager -n 60 >&2
        fi
        info "powering the container off"
        [ -n "$init_pid" ] && inside systemctl poweroff --no-block >/dev/null 2>&1
        for i in $(seq 1 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$nspawn_pid" 2>/dev/null; then
            echo "systemd-test: the container did not power off within 30 s; killing it" >&2
            # Killing its PID 1 ends every process of the container's PID namespace.
            [ -n "$init_pid" ] && kill -KILL "$init_pid" 2>/dev/null
            for i in $(seq 1 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$nspawn_pid" 2>/dev/null
        fi
        wait "$nspawn_pid" 2>/dev/null
    fi
    # /run is not a tmpfs here, so systemd-nspawn refuses to remove its per-machine directory.
    rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null
    [ "$rc" = 0 ] || { echo "--- systemd-nspawn's output:" >&2; tail -n 20 "$WORK/nspawn.log" >&2; }
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t_start=$(date +%s)

if [ -n "${PEERCHAT_DEB:-}" ]; then
    deb=$PEERCHAT_DEB
else
    step "building the package (packaging/build-deb.sh)"
    deb=$(bash packaging/build-deb.sh "$WORK/deb" | tail -n 1)
fi
[ -f "$deb" ] || fail "no package at $deb"
mkdir -p "$WORK/deb-in"
cp "$deb" "$WORK/deb-in/"
deb_name=$(basename "$deb")
info "package: $deb_name"

step "the Debian root ($ROOT)"
mkdir -p "$CACHE"
(
    # One run builds the cache; a concurrent run waits for it.
    flock 9
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -x "$ROOT/lib/systemd/systemd" ]; then
        info "cached: $(cat "$STAMP") ($(date -r "$STAMP" +%F))"
        exit 0
    fi
    mirror=$(apt_mirror)
    info "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror (about 2 minutes)"
    rm -rf "$ROOT" "$ROOT.tmp" "$STAMP"
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        rm -rf "$ROOT.tmp"
        fail "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    mv "$ROOT.tmp" "$ROOT"
    echo "$STAMP_TEXT" >"$STAMP"
) 9>"$CACHE/lock"

step "booting it: systemd-nspawn -D $ROOT --register=no -b (machine $MACHINE)"
# --keep-unit: with --register=no nspawn would still ask this machine's (absent) systemd for a
# scope. --volatile=overlay: changes go to a tmpfs, the cached root stays as debootstrap made it.
# --private-network: the daemons' ports stay inside the container.
systemd-nspawn -D "$ROOT" --register=no --keep-unit --machine="$MACHINE" --private-network \
    --volatile=overlay --console=passive \
    --bind-ro="$repo/.ci:/mnt/peerchat-ci" --bind-ro="$WORK/deb-in:/mnt/peerchat-deb" \
    -b >"$WORK/nspawn.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 1 300); do
    init_pid=$(find_init) && break
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -n 5 "$WORK/nspawn.log")"
    sleep 0.1
done
[ -n "$init_pid" ] || fail "no init process in the container after 30 s"
# Its manager's socket appears a moment after the exec; then wait for the boot to finish.
for _ in $(seq 1 300); do
    inside test -S /run/systemd/private && break
    sleep 0.1
done
state=$(timeout 120 nsenter -t "$init_pid" -a /bin/systemctl is-system-running --wait 2>&1) || true
case $state in
running) info "systemd in the container (pid $init_pid here) is running after $(($(date +%s) - t_start)) s" ;;
degraded)
    info "systemd in the container is degraded; failed units:"
    inside systemctl --failed --no-legend --plain | sed 's/^/   | /'
    ;;
*) fail "systemd in the container did not come up: $state" ;;
esac

step "running .ci/install-test.sh inside the container"
inside CI=true PEERCHAT_DEB="/mnt/peerchat-deb/$deb_name" bash /mnt/peerchat-ci/install-test.sh

step "ok: real systemd path, $(($(date +%s) - t_start)) s"
