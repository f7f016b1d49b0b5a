#!/usr/bin/env bash
# `dualpipe train` under real torchrun (PyTorch 2.x): the agent serves the store on MASTER_PORT
# (TORCHELASTIC_USE_AGENT_STORE=True) and every rank connects to it as a client; the losses
# equal those of `dualpipe train` on its own launcher bit for bit.
# torchrun is $DUALPIPE_TORCHRUN (ctest: the build folder's venv-pt that the PyTorch-CSV test
# makes), else torchrun on PATH; the
# test skips when none works (Debian 12's torchrun of PyTorch 1.13 fails on Python 3.11).
source "$(dirname "$0")/lib.sh"
port=$((20000 + $$ % 20000))
# A torchrun works when it can start one `true` with the flags used below.
torchrun=""
for candidate in "${DUALPIPE_TORCHRUN:-}" "$(command -v torchrun || true)"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  if "$candidate" --nproc-per-node 1 --master-port "$port" --no-python true \
    >"$WORK/torchrun-probe.txt" 2>&1; then
    torchrun=$candidate
    break
  fi
  echo "torchrun $candidate does not work: $(tail -1 "$WORK/torchrun-probe.txt")"
done
[ -n "$torchrun" ] || skip "no working torchrun (set DUALPIPE_TORCHRUN, or install PyTorch 2.x)"
echo "torchrun: $torchrun"

# shellcheck disable=SC2046
args=(--ranks 4 $(train_args) --steps 3 --eval-interval 3 --checkpoint-interval 3 --timeout 30)
"$DUALPIPE" train "${args[@]}" --run-dir "$WORK/own" >"$WORK/own.log" 2>&1 ||
  { cat "$WORK/own.log"; fail "dualpipe train on its own launcher failed"; }
"$torchrun" --nproc-per-node 4 --master-port "$port" --no-python "$DUALPIPE" train "${args[@]}" \
  --run-dir "$WORK/torchrun" >"$WORK/torchrun.log" 2>&1 ||
  { cat "$WORK/torchrun.log"; fail "dualpipe train under torchrun failed"; }
grep -E "step +3/3" "$WORK/torchrun.log"
expect_same_losses "$WORK/own" "$WORK/torchrun"
echo "PASS"
