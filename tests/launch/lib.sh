# Helpers for the launcher tests in tests/launch/ (sourced, not run). Each test runs the real
# `dualpipe` binary (DUALPIPE, set by ctest) as a user would, under `dualpipe launch`, torchrun,
# mpirun or on two network namespaces, with a small job: PP=4, hidden 32, a few steps.
#
# NOTE: no test asserts on wall-clock time. "Within the timeout" and "does not hang" are ctest's
# per-test TIMEOUT; the loops below wait without a limit of their own.

set -euo pipefail

: "${DUALPIPE:?DUALPIPE must name the dualpipe binary}"
export OMP_NUM_THREADS=1
# ctest's return code for a skipped test (SKIP_RETURN_CODE in tests/CMakeLists.txt).
readonly kSkip=77

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualpipe-launch-test.XXXXXX")
NAMESPACES=()
cleanup() {
  local code=$?
  # Ranks a failed test left behind: found by the test's unique folder in their command line,
  # ended by pid.
  for pid in $(pids_using "$WORK"); do kill -KILL "$pid" 2>/dev/null || true; done
  for ns in "${NAMESPACES[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$code"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

skip() {
  echo "SKIP: $*"
  exit "$kSkip"
}

# The pids of processes whose command line contains $1.
pids_using() {
  local marker=$1 dir cmd
  for dir in /proc/[0-9]*; do
    cmd=$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *"$marker"* ]] && echo "${dir#/proc/}"
  done
  return 0
}

# Waits until no process uses $1 in its command line (the ranks of a job are gone).
wait_until_gone() {
  while [ -n "$(pids_using "$1")" ]; do sleep 0.1; done
}

# Waits until file $1 contains a line matching $2 (grep -E); fails, printing the file, when one
# of the processes $3... ended before.
wait_for_line() {
  local file=$1 pattern=$2 pid
  shift 2
  until grep -qE -- "$pattern" "$file" 2>/dev/null; do
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null || { cat "$file"; fail "process $pid ended before '$pattern'"; }
    done
    sleep 0.1
  done
}

# Small training options: a tiny model; the caller adds --steps and the shape.
train_args() {
  echo --hidden 32 --heads 2 --microbatches 8 --microbatch-size 2 --seq-len 16 \
    --eval-windows 2
}

# The per-step losses of run folder $1 at full precision, one per line (from metrics.jsonl).
losses() {
  sed -n 's/.*"loss":\([^,}]*\).*/\1/p' "$1/metrics.jsonl"
}

# Fails unless run folders $1 and $2 have the same losses, printing both.
expect_same_losses() {
  local a b
  a=$(losses "$1")
  b=$(losses "$2")
  [ -n "$a" ] || fail "no losses in $1/metrics.jsonl"
  echo "losses $1:" $a
  echo "losses $2:" $b
  [ "$a" = "$b" ] || fail "losses differ between $1 and $2"
}

# Two "hosts": network namespaces dp<pid>a (10.77.0.1) and dp<pid>b (10.77.0.2) joined by a
# veth pair. Sets HOST_A, HOST_B, LINK_A (host A's end of the link). Skips where namespaces
# cannot be made (not root, no iproute2, a container without CAP_SYS_ADMIN).
make_two_hosts() {
  [ "$(id -u)" = 0 ] || skip "network namespaces need root (CI runs as root)"
  command -v ip >/dev/null || skip "iproute2's ip is not installed (scripts/setup.sh installs it)"
  HOST_A=dp$$a
  HOST_B=dp$$b
  LINK_A=dpv$$a
  local link_b=dpv$$b
  ip netns add "$HOST_A" 2>"$WORK/netns.err" || skip "cannot create a network namespace: $(cat "$WORK/netns.err")"
  NAMESPACES+=("$HOST_A")
  ip netns add "$HOST_B" || skip "cannot create a second network namespace"
  NAMESPACES+=("$HOST_B")
  # NOTE: `ip netns exec` remounts / as a slave, which fails where / is no mount point (the
  # Debian 13 chroot of scripts/test_debian13.sh): the Debian 12 host runs these tests for real.
  ip netns exec "$HOST_A" true 2>"$WORK/netns.err" ||
    skip "cannot run a program in a network namespace: $(cat "$WORK/netns.err")"
  ip link add "$LINK_A" type veth peer name "$link_b" 2>"$WORK/veth.err" ||
    skip "cannot create a veth pair: $(cat "$WORK/veth.err")"
  ip link set "$LINK_A" netns "$HOST_A"
  ip link set "$link_b" netns "$HOST_B"
  ip -n "$HOST_A" addr add 10.77.0.1/24 dev "$LINK_A"
  ip -n "$HOST_B" addr add 10.77.0.2/24 dev "$link_b"
  for host in "$HOST_A" "$HOST_B"; do ip -n "$host" link set lo up; done
  ip -n "$HOST_A" link set "$LINK_A" up
  ip -n "$HOST_B" link set "$link_b" up
}

# Starts node $2 (0 or 1) of a two-node job in namespace $1 in the background, output in $3;
# the rest is the rank command. Sets LAUNCHER_PID.
start_node() {
  local host=$1 node=$2 log=$3
  shift 3
  ip netns exec "$host" "$DUALPIPE" launch --nnodes 2 --node-rank "$node" \
    --master-addr 10.77.0.1 --master-port 29400 -n 2 -- "$@" >"$log" 2>&1 &
  LAUNCHER_PID=$!
}

# The pid of the rank with RANK=$2 among the children of launcher $1 (waits until it is there).
rank_pid() {
  local launcher=$1 rank=$2 dir ppid
  while true; do
    for dir in /proc/[0-9]*; do
      ppid=$({ awk '{print $4}' "$dir/stat"; } 2>/dev/null) || continue
      [ "$ppid" = "$launcher" ] || continue
      if { tr '\0' '\n' <"$dir/environ"; } 2>/dev/null | grep -qx "RANK=$rank"; then
        echo "${dir#/proc/}"
        return 0
      fi
    done
    kill -0 "$launcher" 2>/dev/null || fail "launcher $launcher ended before rank $rank started"
    sleep 0.1
  done
}
