#!/usr/bin/env bash
# The link between two hosts goes down mid-training (`ip link set ... down`; tc netem is not
# available in these kernels): every rank on both hosts fails, both
# launchers exit non-zero naming the first failed rank, and no process of the job is left.
# NOTE: a rank blocked in a collective (an allreduce) when the link goes down can only say that
# it timed out; one blocked in a pipeline receive names the peer.
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
for log in "$WORK/a.log" "$WORK/b.log"; do
  grep -qE "^dualpipe launch: failed: rank [0-3] " "$log" || fail "no final line naming a rank in $log"
done
# The first rank to fail on each host says why (a receive from a named peer, or a collective,
# timed out); its launcher then stops the others.
for log in "$WORK/a.log" "$WORK/b.log"; do
  grep -qE "^\[rank [0-3]\] dualpipe train: error: .*(timed out|failed)" "$log" ||
    fail "no rank in $log says what failed"
done
wait_until_gone "$WORK/run"
echo "PASS"
