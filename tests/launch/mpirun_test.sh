#!/usr/bin/env bash
# `dualpipe train` under Open MPI's mpirun (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK; the user
# exports MASTER_ADDR/MASTER_PORT): the losses equal those of `dualpipe train` on its own
# launcher bit for bit. Skips without mpirun (Debian's openmpi-bin; scripts/setup.sh installs it).
source "$(dirname "$0")/lib.sh"
command -v mpirun >/dev/null || skip "mpirun is not installed (Debian: openmpi-bin)"

# shellcheck disable=SC2046
args=(--ranks 4 $(train_args) --steps 3 --eval-interval 3 --checkpoint-interval 3 --timeout 30)
"$DUALPIPE" train "${args[@]}" --run-dir "$WORK/own" >"$WORK/own.log" 2>&1 ||
  { cat "$WORK/own.log"; fail "dualpipe train on its own launcher failed"; }
export MASTER_ADDR=127.0.0.1
export MASTER_PORT=$((20000 + $$ % 20000))
mpirun -n 4 --allow-run-as-root --oversubscribe -x MASTER_ADDR -x MASTER_PORT -x OMP_NUM_THREADS \
  "$DUALPIPE" train "${args[@]}" --run-dir "$WORK/mpirun" >"$WORK/mpirun.log" 2>&1 ||
  { cat "$WORK/mpirun.log"; fail "dualpipe train under mpirun failed"; }
grep -E "step +3/3" "$WORK/mpirun.log"
expect_same_losses "$WORK/own" "$WORK/mpirun"
echo "PASS"
