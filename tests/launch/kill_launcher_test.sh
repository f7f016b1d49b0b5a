#!/usr/bin/env bash
# kill -9 of a launcher takes its ranks with it (PR_SET_PDEATHSIG in every rank): no rank keeps
# training, orphaned, into the run folder.
#   kill_launcher_test.sh train    `dualpipe train --ranks 4` (its own launcher)
#   kill_launcher_test.sh launch   `dualpipe launch -n 3` of shell ranks
source "$(dirname "$0")/lib.sh"
case "${1:-train}" in
  train)
    # shellcheck disable=SC2046
    "$DUALPIPE" train --ranks 4 $(train_args) --steps 100000 --eval-interval 100000 \
      --checkpoint-interval 100000 --run-dir "$WORK/run" >"$WORK/log" 2>&1 &
    launcher=$!
    wait_for_line "$WORK/log" "step +3/" "$launcher"
    ;;
  launch)
    # $0 of each shell rank is the test's folder, so the ranks can be found by it.
    "$DUALPIPE" launch -n 3 -- /bin/sh -c 'echo "up $RANK"; while :; do sleep 1; done' "$WORK/run" \
      >"$WORK/log" 2>&1 &
    launcher=$!
    for rank in 0 1 2; do wait_for_line "$WORK/log" "up $rank" "$launcher"; done
    ;;
  *) fail "unknown variant $1 (train or launch)" ;;
esac
ranks=$(pids_using "$WORK/run" | grep -vx "$launcher" | tr '\n' ' ')
echo "launcher $launcher, ranks $ranks"
[ -n "$ranks" ] || fail "no rank processes found"
kill -KILL "$launcher"
wait "$launcher" || true
# Ranks still running here would be orphans; ctest's TIMEOUT fails the test if they never end.
wait_until_gone "$WORK/run"
echo "PASS: every rank ended with its launcher"
