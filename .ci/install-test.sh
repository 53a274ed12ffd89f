#!/usr/bin/env bash
# Install test of the peerchat .deb, run by .ci/run when CI=true (never by cargo test).
#
# Builds the package, installs it, checks the units (systemd-analyze verify, and security: an
# exposure of at most 2.0 per system unit), starts registryd and chatd the way their units do,
# sends messages with the installed chatctl (as root and as a member of the group peerchat),
# reinstalls the package (state must survive), then purges it and checks that state, accounts and
# config are gone. A trap stops what it started and purges the package on every exit.
#
# Needs root. It installs and purges the package `peerchat` on this machine, so it refuses to run
# unless CI=true or PEERCHAT_INSTALL_TEST=1. On a machine not booted with systemd (a container),
# it starts the daemons itself: the unit's User=/Group=, StateDirectory=/RuntimeDirectory= (created
# with the unit's modes), UMask=, LimitNOFILE=, Environment=, ExecStart= and the variables systemd
# would set (STATE_DIRECTORY, RUNTIME_DIRECTORY, NOTIFY_SOCKET, ...), all read from the installed
# unit files. With systemd running, it uses systemctl, and also checks what only a real systemd
# shows: Type=notify readiness, `systemctl restart/stop` (within TimeoutStopSec), and a journal
# with no unit killed or refused by its sandbox. .ci/systemd-test.sh runs this script inside a
# throwaway Debian root booted with systemd-nspawn, with PEERCHAT_DEB set to a package built
# outside (the root has no cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=peerchat
WORK=/run/peerchat-install-test
TEST_USER=peerchat-itest
SYSTEM_UNITS=(registryd chatd)
MAX_EXPOSURE=2.0
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

step() { printf '\n== install-test: %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
fail() {
    printf 'install-test: FAIL: %s\n' "$*" >&2
    exit 1
}

if [ "${CI:-}" != true ] && [ "${PEERCHAT_INSTALL_TEST:-}" != 1 ]; then
    echo "install-test: this installs and purges the package '$PKG' on this machine;" >&2
    echo "install-test: run it with CI=true or PEERCHAT_INSTALL_TEST=1" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || fail "must run as root (dpkg, service accounts)"

booted=false
[ -d /run/systemd/system ] && booted=true

# ---------------------------------------------------------------------------------------------
# helpers

# dpkg/apt may be busy (another job, unattended upgrades): wait for the lock instead of failing.
dpkg_wait() {
    local out rc i
    for i in $(seq 1 150); do
        rc=0
        out=$(dpkg "$@" 2>&1) || rc=$?
        if [ "$rc" = 0 ]; then
            [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/   | /'
            return 0
        fi
        if grep -q -e 'lock' <<<"$out" && grep -q -e 'locked by another process' -e 'Could not get lock' -e 'unable to lock' <<<"$out"; then
            [ "$i" = 1 ] && info "dpkg is locked by another process; waiting (up to 5 min)"
            sleep 2
            continue
        fi
        printf '%s\n' "$out" | sed 's/^/   | /' >&2
        return "$rc"
    done
    echo "install-test: dpkg stayed locked for 5 minutes" >&2
    return 1
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@" ||
        { apt-get -o DPkg::Lock::Timeout=300 update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"; }
}

pkg_status() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || echo not-installed; }

purge_package() {
    if [ "$(pkg_status)" != not-installed ]; then
        dpkg_wait --purge "$PKG"
    fi
}

# The last value of KEY= in the [Service] section of a unit file.
unit_get() {
    local key=$1 file=$2
    awk -v key="$key" '
        /^\[/ { section = $0; next }
        section == "[Service]" && index($0, key "=") == 1 { value = substr($0, length(key) + 2) }
        END { print value }' "$file"
}

# Every value of KEY= in [Service], one per line.
unit_get_all() {
    local key=$1 file=$2
    awk -v key="$key" '
        /^\[/ { section = $0; next }
        section == "[Service]" && index($0, key "=") == 1 { print substr($0, length(key) + 2) }' "$file"
}

# Creates /BASE/DIR for each DIR like systemd does for StateDirectory=/RuntimeDirectory=: parents
# root 0755, the directory itself owned by the unit's user and group with the given mode.
make_unit_dirs() {
    local base=$1 dirs=$2 mode=$3 user=$4 group=$5 d path
    for d in $dirs; do
        path="$base/$d"
        install -d -m 0755 -o root -g root "$(dirname "$path")"
        mkdir -p "$path"
        chown "$user:$group" "$path"
        chmod "$mode" "$path"
    done
}

# First directory of a space-separated list, as an absolute path under BASE (systemd exports all
# of them colon-separated; the daemons use the first).
dir_env() {
    local base=$1 dirs=$2 d out=""
    for d in $dirs; do out="${out:+$out:}$base/$d"; done
    printf '%s' "$out"
}

# Starts UNIT (registryd|chatd) like systemd would, in the background; its pid goes to
# $WORK/UNIT.pid and its stderr to $WORK/UNIT.log.
start_like_unit() {
    local unit=$1 file="/usr/lib/systemd/system/$1.service"
    local user group umask_ nofile state_dirs state_mode rt_dirs rt_mode home
    user=$(unit_get User "$file")
    group=$(unit_get Group "$file")
    if [ -z "$user" ] || [ -z "$group" ]; then fail "$file has no User=/Group="; fi
    umask_=$(unit_get UMask "$file")
    nofile=$(unit_get LimitNOFILE "$file")
    state_dirs=$(unit_get StateDirectory "$file")
    state_mode=$(unit_get StateDirectoryMode "$file")
    rt_dirs=$(unit_get RuntimeDirectory "$file")
    rt_mode=$(unit_get RuntimeDirectoryMode "$file")
    home=$(getent passwd "$user" | cut -d: -f6)

    local -a envs=(PATH="$CLEAN_PATH" LANG=C.UTF-8 USER="$user" LOGNAME="$user" HOME="$home"
        SHELL=/usr/sbin/nologin INVOCATION_ID=install-test)
    if [ -n "$state_dirs" ]; then
        make_unit_dirs /var/lib "$state_dirs" "${state_mode:-0755}" "$user" "$group"
        envs+=(STATE_DIRECTORY="$(dir_env /var/lib "$state_dirs")")
    fi
    if [ -n "$rt_dirs" ]; then
        make_unit_dirs /run "$rt_dirs" "${rt_mode:-0755}" "$user" "$group"
        envs+=(RUNTIME_DIRECTORY="$(dir_env /run "$rt_dirs")")
    fi
    local line
    while IFS= read -r line; do
        # Environment=A=1 B=2 (the units use no quoting)
        for word in $line; do envs+=("$word"); done
    done < <(unit_get_all Environment "$file")
    envs+=("${EXTRA_ENV[@]}")

    local -a exec_start
    read -r -a exec_start <<<"$(unit_get ExecStart "$file")"
    [ "${#exec_start[@]}" -gt 0 ] || fail "$file has no ExecStart="

    # Type=notify: listen for READY=1/STOPPING=1 like systemd (if python3 is here to do it).
    rm -f "$WORK/$unit.notify" "$WORK/$unit.notify.sock"
    if [ "$have_python" = true ]; then
        python3 - "$WORK/$unit.notify.sock" "$WORK/$unit.notify" <<'PY' &
import os, socket, sys
sock_path, log_path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
os.chmod(sock_path, 0o666)
with open(log_path, "a", buffering=1) as log:
    while True:
        data = s.recv(4096)
        for line in data.decode(errors="replace").splitlines():
            log.write(line + "\n")
PY
        echo $! >"$WORK/$unit.notify.pid"
        for _ in $(seq 1 50); do [ -S "$WORK/$unit.notify.sock" ] && break; sleep 0.1; done
        envs+=(NOTIFY_SOCKET="$WORK/$unit.notify.sock")
    fi

    # systemd (PID 1) may raise the hard limit; we can only go up to ours.
    if [ -n "$nofile" ] && [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$nofile" ]; then
        info "LimitNOFILE=$nofile is above this machine's hard limit; using $(ulimit -Hn)"
        nofile=$(ulimit -Hn)
    fi
    info "as $user:$group, umask ${umask_:-0022}, LimitNOFILE=${nofile:-default}: ${exec_start[*]}"
    info "env: $(printf '%s ' "${envs[@]}" | grep -o -E '(STATE_DIRECTORY|RUNTIME_DIRECTORY|CHATD_[A-Z_]*|REGISTRYD_[A-Z_]*)=[^ ]*' | tr '\n' ' ')"
    (
        [ -n "$umask_" ] && umask "$umask_"
        [ -n "$nofile" ] && ulimit -n "$nofile"
        cd /
        exec setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs \
            --inh-caps=-all --bounding-set=-all -- \
            env -i "${envs[@]}" "${exec_start[@]}" </dev/null >>"$WORK/$unit.log" 2>&1
    ) &
    echo $! >"$WORK/$unit.pid"
}

wait_ready() {
    local unit=$1 pid i
    pid=$(cat "$WORK/$unit.pid")
    for i in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$unit"
            fail "$unit exited during start-up"
        fi
        if [ "$have_python" = true ]; then
            grep -q '^READY=1$' "$WORK/$unit.notify" 2>/dev/null && { info "$unit (pid $pid) sent READY=1"; return 0; }
        else
            case $unit in
            chatd) [ -S /run/chatd/chatd.sock ] && { info "$unit (pid $pid): socket is there (no python3: READY=1 not checked)"; return 0; } ;;
            registryd) (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null && { info "$unit (pid $pid): port $registry_port answers (no python3: READY=1 not checked)"; return 0; } ;;
            esac
        fi
        sleep 0.1
    done
    show_log "$unit"
    fail "$unit did not become ready within 20 s"
}

# SIGTERM like `systemctl stop`; the daemon must exit 0 well within TimeoutStopSec.
stop_unit() {
    local unit=$1 pid rc=0 i
    if [ "$booted" = true ]; then
        systemctl stop "$unit.service"
        info "systemctl stop $unit: ok"
        return 0
    fi
    [ -f "$WORK/$unit.pid" ] || return 0
    pid=$(cat "$WORK/$unit.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            show_log "$unit"
            fail "$unit did not stop within 10 s of SIGTERM"
        fi
        wait "$pid" 2>/dev/null || rc=$?
        [ "$rc" = 0 ] || { show_log "$unit"; fail "$unit exited with status $rc after SIGTERM"; }
        if [ "$have_python" = true ]; then
            grep -q '^STOPPING=1$' "$WORK/$unit.notify" || fail "$unit did not send STOPPING=1"
        fi
        info "$unit stopped cleanly (status 0$([ "$have_python" = true ] && echo ', STOPPING=1 sent'))"
    fi
    rm -f "$WORK/$unit.pid"
    stop_notify_listener "$unit"
    # systemd removes the RuntimeDirectory= when the unit stops.
    local rt_dirs d
    rt_dirs=$(unit_get RuntimeDirectory "/usr/lib/systemd/system/$unit.service" 2>/dev/null || true)
    for d in $rt_dirs; do rm -rf "/run/$d"; done
}

stop_notify_listener() {
    local f="$WORK/$1.notify.pid"
    if [ -f "$f" ]; then
        kill "$(cat "$f")" 2>/dev/null || true
        wait "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    fi
}

start_units() {
    if [ "$booted" = true ]; then
        systemctl daemon-reload
        systemctl restart registryd.service chatd.service
        systemctl is-active --quiet registryd.service || fail "registryd.service is not active"
        systemctl is-active --quiet chatd.service || fail "chatd.service is not active"
        info "registryd.service and chatd.service are active"
        return 0
    fi
    step "starting registryd like registryd.service"
    start_like_unit registryd
    wait_ready registryd
    step "starting chatd like chatd.service"
    start_like_unit chatd
    wait_ready chatd
}

show_log() {
    local unit=$1
    if [ "$booted" = true ]; then
        journalctl -u "$unit.service" -n 40 --no-pager >&2 || true
    elif [ -f "$WORK/$unit.log" ]; then
        echo "--- last lines of $unit's log ($WORK/$unit.log):" >&2
        tail -n 40 "$WORK/$unit.log" >&2
        echo "---" >&2
    fi
}

# Kills only processes this script started (pids it recorded), e.g. left by an aborted run.
kill_recorded() {
    local f pid exe
    for f in "$WORK"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        case $exe in
        /usr/bin/chatd | /usr/bin/registryd | /usr/bin/setpriv | */python3*)
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
            ;;
        esac
        rm -f "$f"
    done
}

remove_test_user() {
    if getent passwd "$TEST_USER" >/dev/null; then
        userdel "$TEST_USER" >/dev/null 2>&1 || true
    fi
    if getent group "$TEST_USER" >/dev/null; then
        groupdel "$TEST_USER" >/dev/null 2>&1 || true
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$rc" != 0 ]; then
        echo >&2
        echo "install-test: failed (status $rc); cleaning up" >&2
        show_log registryd
        show_log chatd
    fi
    if [ "$booted" = true ] && [ "$(pkg_status)" = installed ]; then
        systemctl stop chatd.service registryd.service >/dev/null 2>&1
    fi
    kill_recorded
    remove_test_user
    if [ "$(pkg_status)" != not-installed ]; then
        echo "== install-test: purging $PKG" >&2
        purge_package >&2
    fi
    rm -rf "$WORK"
    exit "$rc"
}

# chatctl exactly as an admin would run it: default socket discovery, nothing from our env.
chatctl_as_root() { env -u CHATD_SOCKET -u XDG_RUNTIME_DIR -u RUNTIME_DIRECTORY PATH="$CLEAN_PATH" /usr/bin/chatctl "$@"; }
chatctl_as() {
    local user=$1
    shift
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
        env -i PATH="$CLEAN_PATH" HOME=/ LANG=C.UTF-8 /usr/bin/chatctl "$@"
}

# Real systemd only: each unit is active and running (for Type=notify that means systemd got
# READY=1: the sandbox, RuntimeDirectory= and the socket group all worked) and was not restarted.
check_units_active() {
    [ "$booted" = true ] || return 0
    local u props
    for u in "${SYSTEM_UNITS[@]}"; do
        props=$(systemctl show "$u.service" -p Type -p ActiveState -p SubState -p NRestarts -p MainPID | tr '\n' ' ')
        for want in Type=notify ActiveState=active SubState=running; do
            grep -q -w -- "$want" <<<"$props" || fail "$u.service: expected $want: $props"
        done
        grep -q -w 'NRestarts=0' <<<"$props" || fail "$u.service was restarted by systemd (it failed): $props"
        info "$u.service: $props"
    done
}

main_pid() { systemctl show "$1.service" -p MainPID --value; }

# Milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A copy of the package with a higher version, so that the upgrade step is a real upgrade
# (prerm upgrade, postinst configure OLD-VERSION) rather than a reinstall.
make_upgrade_deb() {
    local dir="$WORK/upgrade" version
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -R "$deb" "$dir/pkg"
    version=$(dpkg-deb -f "$deb" Version)
    sed -i "s/^Version: .*/Version: ${version}+upgradetest1/" "$dir/pkg/DEBIAN/control"
    dpkg-deb -Zgzip -b "$dir/pkg" "$dir/peerchat-upgrade.deb" >/dev/null
    echo "$dir/peerchat-upgrade.deb"
}

# Real systemd only: nothing in the units' journal says the sandbox killed or refused something
# (SystemCallFilter= with SystemCallErrorNumber=EPERM turns a filtered call into EPERM, so look
# for that as well as for a unit killed by a signal or failing).
check_journal() {
    [ "$booted" = true ] || return 0
    local journal bad
    journal=$(journalctl --no-pager -o short-monotonic -u chatd.service -u registryd.service)
    bad=$(grep -E -i 'code=(killed|dumped)|status=31/SYS|SIGSYS|Failed with result|Operation not permitted|os error 1\)|seccomp' <<<"$journal" || true)
    if [ -n "$bad" ]; then
        printf '%s\n' "$bad" | sed 's/^/   | /' >&2
        fail "the journal shows a unit killed or refused by its sandbox"
    fi
    info "journal of chatd.service and registryd.service: $(wc -l <<<"$journal") lines, no unit killed or refused by its sandbox"
}

# ---------------------------------------------------------------------------------------------

if [ "$booted" = true ]; then
    step "preparing: REAL systemd path (systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') is PID 1)"
else
    step "preparing: EMULATED path (systemd is not running here; the daemons are started like their units)"
fi
mkdir -p "$WORK"
chmod 0755 "$WORK"
kill_recorded
remove_test_user
if [ "$(pkg_status)" != not-installed ]; then
    info "$PKG is already installed ($(pkg_status)), probably left by an aborted run: purging it first"
    purge_package
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v systemd-analyze >/dev/null || { info "installing systemd (for systemd-analyze)"; apt_install systemd; }
command -v adduser >/dev/null || { info "installing adduser (a dependency of $PKG)"; apt_install adduser; }
command -v setpriv >/dev/null || fail "setpriv (util-linux) is missing"
have_python=false
command -v python3 >/dev/null && have_python=true
# (Only the emulated path listens for READY=1 itself; under systemd the unit's state shows it.)
[ "$have_python" = true ] || [ "$booted" = true ] || info "python3 is missing: READY=1/STOPPING=1 will not be checked"

if [ -n "${PEERCHAT_DEB:-}" ]; then
    step "using the package $PEERCHAT_DEB (PEERCHAT_DEB)"
    deb=$PEERCHAT_DEB
    [ -f "$deb" ] || fail "PEERCHAT_DEB=$deb is not a file"
else
    step "building the package (packaging/build-deb.sh)"
    deb=$(bash packaging/build-deb.sh "$WORK/deb" | tail -n 1)
    [ -f "$deb" ] || fail "build-deb.sh did not produce a package"
fi
info "$deb ($(du -h "$deb" | cut -f1))"

step "installing it (dpkg -i)"
dpkg_wait -i "$deb"
[ "$(pkg_status)" = installed ] || fail "$PKG is not installed after dpkg -i"
for f in /usr/bin/chatd /usr/bin/registryd /usr/bin/chatctl \
    /usr/lib/systemd/system/chatd.service /usr/lib/systemd/system/registryd.service \
    /usr/lib/systemd/user/chatd.service /usr/lib/systemd/user/registryd.service \
    /etc/peerchat/chatd.toml /etc/peerchat/registryd.toml \
    /usr/share/man/man8/chatd.8.gz /usr/share/man/man8/registryd.8.gz /usr/share/man/man1/chatctl.1.gz \
    /usr/share/bash-completion/completions/chatctl /usr/share/zsh/vendor-completions/_chatctl \
    /usr/share/fish/vendor_completions.d/chatctl.fish; do
    [ -e "$f" ] || fail "$f is missing after installation"
done
conffiles=$(dpkg-query -W -f='${Conffiles}' "$PKG")
for f in /etc/peerchat/chatd.toml /etc/peerchat/registryd.toml; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done
info "files in place; /etc/peerchat/chatd.toml and registryd.toml are conffiles"
getent group peerchat >/dev/null || fail "group peerchat was not created"
getent passwd chatd >/dev/null || fail "user chatd was not created"
getent passwd registryd >/dev/null || fail "user registryd was not created"
chatd_uid=$(id -u chatd)
registryd_uid=$(id -u registryd)
info "accounts: $(id chatd); $(id registryd); group $(getent group peerchat)"

step "checking the shipped config files (--check-config, as shipped and with every key uncommented)"
chatd --check-config /etc/peerchat/chatd.toml
registryd --check-config /etc/peerchat/registryd.toml
for d in chatd registryd; do
    sed -E 's/^#([a-z_]+ = )/\1/' "/etc/peerchat/$d.toml" >"$WORK/$d-all-keys.toml"
    n=$(grep -c -E '^[a-z_]+ = ' "$WORK/$d-all-keys.toml")
    "$d" --check-config "$WORK/$d-all-keys.toml" >/dev/null 2>&1 ||
        { "$d" --check-config "$WORK/$d-all-keys.toml" || true; fail "/etc/peerchat/$d.toml documents keys or values $d rejects"; }
    info "$d.toml: all $n documented keys are accepted"
done

step "systemd-analyze verify (system units, then user units)"
man_opt=()
if ! command -v man >/dev/null; then
    man_opt=(--man=no)
    info "man is not installed: Documentation= is not checked"
fi
check_verify() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" != 0 ] || [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/   | /' >&2
        fail "systemd-analyze verify is not clean (status $rc): $*"
    fi
}
check_verify systemd-analyze verify "${man_opt[@]}" /usr/lib/systemd/system/chatd.service /usr/lib/systemd/system/registryd.service
info "system units: clean"
install -d -m 0700 "$WORK/xdg-runtime"
check_verify env XDG_RUNTIME_DIR="$WORK/xdg-runtime" systemd-analyze --user verify "${man_opt[@]}" \
    /usr/lib/systemd/user/chatd.service /usr/lib/systemd/user/registryd.service
info "user units: clean"

step "systemd-analyze security --offline=true (exposure must be at most $MAX_EXPOSURE)"
for u in "${SYSTEM_UNITS[@]}"; do
    rc=0
    out=$(systemd-analyze security --offline=true --threshold=20 "/usr/lib/systemd/system/$u.service" 2>&1) || rc=$?
    exposure=$(sed -n -E 's/.*Overall exposure level for [^:]*: ([0-9.]+).*/\1/p' <<<"$out")
    [ -n "$exposure" ] || { printf '%s\n' "$out" >&2; fail "no exposure level for $u.service"; }
    if [ "$rc" != 0 ] || awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e > m) }'; then
        grep '✗' <<<"$out" >&2 || true
        fail "$u.service: exposure $exposure > $MAX_EXPOSURE"
    fi
    info "$u.service: exposure $exposure"
done

# The units listen on registryd's default port 8888; if something else holds it here, give both
# daemons another port through their environment (the only deviation from the units).
EXTRA_ENV=()
registry_port=8888
if [ "$booted" = false ] && (exec 3<>/dev/tcp/127.0.0.1/8888) 2>/dev/null; then
    for p in $(seq 28888 28988); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then registry_port=$p; break; fi
    done
    info "port 8888 is in use on this machine: using $registry_port (REGISTRYD_LISTEN, CHATD_REGISTRY)"
    EXTRA_ENV=(REGISTRYD_LISTEN="0.0.0.0:$registry_port" CHATD_REGISTRY="127.0.0.1:$registry_port")
fi

start_units
check_units_active

step "checking directories and the control socket"
expect_stat() {
    local path=$1 want=$2 got
    got=$(stat -c '%U:%G %a' "$path" 2>/dev/null) || fail "$path does not exist"
    [ "$got" = "$want" ] || fail "$path is $got, expected $want"
    info "$path: $got"
}
expect_stat /run/chatd "chatd:peerchat 750"
expect_stat /run/chatd/chatd.sock "chatd:peerchat 660"
expect_stat /var/lib/peerchat/chatd "chatd:peerchat 700"
expect_stat /var/lib/peerchat/registryd "registryd:registryd 700"
[ -f /var/lib/peerchat/chatd/chatd.db ] || fail "no /var/lib/peerchat/chatd/chatd.db"
[ -f /var/lib/peerchat/registryd/registry.db ] || fail "no /var/lib/peerchat/registryd/registry.db"
info "databases: /var/lib/peerchat/chatd/chatd.db, /var/lib/peerchat/registryd/registry.db"

step "using the installed chatctl"
status_json=$(chatctl_as_root --json status) || fail "chatctl status (as root) failed"
name=$(sed -n -E 's/.*"name":"([^"]*)".*/\1/p' <<<"$status_json" | head -n 1)
[ -n "$name" ] || fail "no node name in: $status_json"
info "chatctl status (root): node $name"
token="install-test-$$-$(date +%s)"
chatctl_as_root send --wait=30 "$name" "from root $token" >/dev/null ||
    fail "chatctl send --wait (root) to $name did not report delivery"
info "root: sent to $name, delivered"

useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$TEST_USER"
usermod -a -G peerchat "$TEST_USER"
chatctl_as "$TEST_USER" send --wait=30 "$name" "from a member $token" >/dev/null ||
    fail "chatctl send --wait as $TEST_USER (member of peerchat) failed"
info "$TEST_USER (member of peerchat): sent to $name, delivered"
rc=0
chatctl_as nobody status >/dev/null 2>"$WORK/nobody.err" || rc=$?
[ "$rc" != 0 ] || fail "user nobody (not in group peerchat) could use the control socket"
[ "$rc" = 7 ] || { cat "$WORK/nobody.err" >&2; fail "user nobody was refused with exit status $rc, expected 7 (refused: permission)"; }
info "nobody (not a member): refused, exit status $rc ($(head -n 1 "$WORK/nobody.err"))"

inbox=$(chatctl_as_root --json inbox --limit 100)
grep -q "from root $token" <<<"$inbox" || fail "the message from root is not in the inbox"
grep -q "from a member $token" <<<"$inbox" || fail "the message from $TEST_USER is not in the inbox"
info "both messages are in $name's inbox"

step "chatctl doctor (as root)"
rc=0
doctor_out=$(chatctl_as_root doctor 2>&1) || rc=$?
printf '%s\n' "$doctor_out" | sed 's/^/   | /'
[ "$rc" = 0 ] || fail "chatctl doctor failed (exit status $rc)"

step "restart: chatd keeps its inbox"
if [ "$booted" = true ]; then
    old_pid=$(main_pid chatd)
    systemctl restart chatd.service
    [ "$(main_pid chatd)" != "$old_pid" ] || fail "systemctl restart chatd did not start a new process"
    check_units_active
else
    stop_unit chatd
    start_like_unit chatd
    wait_ready chatd
fi
inbox=$(chatctl_as_root --json inbox --limit 100)
grep -q "from root $token" <<<"$inbox" || fail "the inbox lost the message from root across a restart"
grep -q "from a member $token" <<<"$inbox" || fail "the inbox lost the message from $TEST_USER across a restart"
info "both messages are still in the inbox"

if [ "$booted" = true ]; then
    step "stop: systemctl stop chatd within its TimeoutStopSec, exit status 0"
    stop_limit=$(unit_get TimeoutStopSec /usr/lib/systemd/system/chatd.service)
    stop_limit_s=${stop_limit%s}
    t0=$(now_ms)
    systemctl stop chatd.service
    elapsed=$(($(now_ms) - t0))
    props=$(systemctl show chatd.service -p Result -p ExecMainCode -p ExecMainStatus | tr '\n' ' ')
    # ExecMainCode=1 is CLD_EXITED: chatd exited by itself rather than being killed.
    for want in Result=success ExecMainCode=1 ExecMainStatus=0; do
        grep -q -w "$want" <<<"$props" || fail "chatd did not stop cleanly: $props"
    done
    [ "$elapsed" -lt $((stop_limit_s * 1000)) ] || fail "systemctl stop chatd took $elapsed ms, TimeoutStopSec is $stop_limit"
    info "stopped in $elapsed ms (TimeoutStopSec=$stop_limit): $props"
    systemctl start chatd.service
    check_units_active
fi

upgrade_deb=$(make_upgrade_deb)
upgrade_version=$(dpkg-deb -f "$upgrade_deb" Version)
step "upgrade to $upgrade_version: state, accounts and edited config are kept"
echo "# edited by install-test $token" >>/etc/peerchat/chatd.toml
if [ "$booted" = true ]; then
    # Upgrade under running units, as apt does: postinst restarts them.
    old_pid=$(main_pid chatd)
    dpkg_wait -i --force-confold "$upgrade_deb"
    [ "$(main_pid chatd)" != "$old_pid" ] || fail "the upgrade did not restart chatd.service"
    check_units_active
else
    for u in chatd registryd; do stop_unit "$u"; done
    dpkg_wait -i --force-confold "$upgrade_deb"
fi
[ "$(dpkg-query -W -f='${Version}' "$PKG")" = "$upgrade_version" ] || fail "$PKG is not at version $upgrade_version after the upgrade"
if [ "$(id -u chatd)" != "$chatd_uid" ] || [ "$(id -u registryd)" != "$registryd_uid" ]; then
    fail "the service users changed"
fi
grep -q "edited by install-test $token" /etc/peerchat/chatd.toml || fail "the edited /etc/peerchat/chatd.toml was replaced"
info "users unchanged, edited chatd.toml kept"
[ "$booted" = true ] || start_units
chatctl_as_root --json inbox --limit 100 | grep -q "from root $token" || fail "the inbox lost its messages across the reinstall"
chatctl_as_root --json peers | grep -q "\"$name\"" || fail "the registry no longer knows $name"
info "messages and the registry's names survived"
check_journal
# With systemd, dpkg --remove stops the units (prerm); without it, stop what we started.
[ "$booted" = true ] || for u in chatd registryd; do stop_unit "$u"; done

step "remove (dpkg --remove): programs go, state, accounts and config stay"
remove_test_user
dpkg_wait --remove "$PKG"
[ "$(pkg_status)" = config-files ] || fail "after dpkg --remove, $PKG is $(pkg_status), expected config-files"
[ ! -e /usr/bin/chatd ] || fail "/usr/bin/chatd is still there after dpkg --remove"
for p in /var/lib/peerchat/chatd/chatd.db /var/lib/peerchat/registryd/registry.db /etc/peerchat/chatd.toml; do
    [ -e "$p" ] || fail "$p was deleted by dpkg --remove"
done
getent passwd chatd >/dev/null || fail "user chatd was deleted by dpkg --remove"
if [ "$booted" = true ]; then
    for u in "${SYSTEM_UNITS[@]}"; do
        state=$(systemctl show "$u.service" -p ActiveState --value)
        [ "$state" = inactive ] || fail "$u.service is $state after dpkg --remove, expected inactive"
    done
    info "dpkg --remove stopped both units"
fi
info "binaries gone; databases, /etc/peerchat and the accounts kept"

step "purge (dpkg --purge)"
purge_package
[ "$(pkg_status)" = not-installed ] || fail "$PKG is still known to dpkg: $(pkg_status)"
for p in /var/lib/peerchat /etc/peerchat /run/chatd /usr/bin/chatd /usr/lib/systemd/system/chatd.service \
    /etc/systemd/system/multi-user.target.wants/chatd.service \
    /etc/systemd/system/multi-user.target.wants/registryd.service; do
    if [ -e "$p" ] || [ -L "$p" ]; then fail "$p is still there after purge"; fi
done
for a in chatd registryd; do
    if getent passwd "$a" >/dev/null; then fail "user $a is still there after purge"; fi
done
for g in peerchat registryd; do
    if getent group "$g" >/dev/null; then fail "group $g is still there after purge"; fi
done
info "state, config, units, users chatd/registryd and groups peerchat/registryd are gone"

echo
echo "== install-test: ok"
