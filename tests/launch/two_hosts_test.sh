#!/usr/bin/env bash
# Two hosts (network namespaces joined by a veth pair, 10.77.0.1 and 10.77.0.2), one
# `dualpipe launch --nnodes 2` on each with 2 ranks: `dualpipe train` gives the same losses bit
# for bit as the same job on one host.
#   two_hosts_test.sh pp   DualPipe PP=4 (ranks 0,1 on host A; 2,3 on host B)
#   two_hosts_test.sh ep   DualPipe PP=2 x EP=2
source "$(dirname "$0")/lib.sh"
case "${1:-pp}" in
  pp) shape=(--ranks 4) ;;
  ep) shape=(--ranks 2 --ep 2) ;;
  *) fail "unknown variant $1 (pp or ep)" ;;
esac
make_two_hosts

# shellcheck disable=SC2046
"$DUALPIPE" train "${shape[@]}" $(train_args) --steps 3 --eval-interval 3 --checkpoint-interval 3 --timeout 30 --run-dir "$WORK/one-host" \
  >"$WORK/one-host.log" 2>&1 || { cat "$WORK/one-host.log"; fail "the one-host job failed"; }

# shellcheck disable=SC2046
job=("$DUALPIPE" train "${shape[@]}" $(train_args) --steps 3 --eval-interval 3 --checkpoint-interval 3 --timeout 30 --run-dir "$WORK/two-hosts")
start_node "$HOST_A" 0 "$WORK/a.log" "${job[@]}"
a=$LAUNCHER_PID
start_node "$HOST_B" 1 "$WORK/b.log" "${job[@]}"
b=$LAUNCHER_PID
status_a=0
status_b=0
wait "$a" || status_a=$?
wait "$b" || status_b=$?
echo "--- host A (node 0)"; cat "$WORK/a.log"
echo "--- host B (node 1)"; cat "$WORK/b.log"
[ "$status_a" = 0 ] && [ "$status_b" = 0 ] ||
  fail "two-host job failed: host A exit $status_a, host B exit $status_b"
# Ranks 2 and 3 ran on host B and wrote their checkpoint files into the shared run folder.
[ -f "$WORK/two-hosts/checkpoints/step-000003/rank-3.pt" ] || fail "no checkpoint of rank 3"
expect_same_losses "$WORK/one-host" "$WORK/two-hosts"
echo "PASS"
