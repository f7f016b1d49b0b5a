#!/usr/bin/env bash
# The link between two hosts goes down mid-training (`ip link set ... down`; tc netem is not
# available in these kernels): every rank on both hosts fails, both
# launchers exit non-zero naming the first failed rank, and no process of the job is left.
# Every rank, whether blocked in a pipeline send/receive or in a collective (an allreduce) when
# the link goes down, names the peers it waited for ("; peers it waited for: rank N (host H)",
# peers on the other host first), and each launcher's final line blames a rank of the other
# host (the end of the wait-for chain), never one of its own.
source "$(dirname "$0")/lib.sh"
make_two_hosts

# shellcheck disable=SC2046
job=("$DUALPIPE" train --ranks 4 $(train_args) --steps 100000 --checkpoint-interval 100000
     --eval-interval 100000 --timeout 10 --run-dir "$WORK/run")
start_node "$HOST_A" 0 "$WORK/a.log" "${job[@]}"
a=$LAUNCHER_PID
start_node "$HOST_B" 1 "$WORK/b.log" "${job[@]}"
b=$LAUNCHER_PID
wait_for_line "$WORK/a.log" "step +3/" "$a" "$b"
ip -n "$HOST_A" link set "$LINK_A" down
status_a=0
status_b=0
wait "$a" || status_a=$?
wait "$b" || status_b=$?
echo "--- host A (node 0), exit $status_a"; grep -v "\] step " "$WORK/a.log" || true
echo "--- host B (node 1), exit $status_b"; cat "$WORK/b.log"
[ "$status_a" != 0 ] || fail "host A's launcher exited 0 after the link went down"
[ "$status_b" != 0 ] || fail "host B's launcher exited 0 after the link went down"
# Every rank's error line on both hosts names a peer rank it waited for (a rank its launcher
# had to SIGKILL after the grace period prints none).
for log in "$WORK/a.log" "$WORK/b.log"; do
  grep -qE "^\[rank [0-3]\] dualpipe train: error: " "$log" || fail "no rank in $log says what failed"
  if grep -E "^\[rank [0-3]\] dualpipe train: error: " "$log" |
    grep -vE "; peers it waited for: rank [0-3]"; then
    fail "the error lines above in $log name no peer rank"
  fi
done
# Each launcher blames a rank of the other host.
grep -qE "^dualpipe launch: failed: (rank [23]|one of ranks [23], [23]) \(on another node\)" \
  "$WORK/a.log" || fail "host A's final line does not blame a rank of host B"
grep -qE "^dualpipe launch: failed: (rank [01]|one of ranks [01], [01]) \(on another node\)" \
  "$WORK/b.log" || fail "host B's final line does not blame a rank of host A"
wait_until_gone "$WORK/run"
echo "PASS"
