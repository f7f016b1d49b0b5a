#!/usr/bin/env bash
# Does the runtime agree with `dualpipe plan`? Plans 4 ranks x 8 micro-batches on emulated costs
# (F=40, B=80, W=40, FB=120 ms: stages that sleep, so 2 cores do not distort it), saves the
# winner, then times the winner's file and the best fixed families with `dualpipe bench runtime
# --emulate` in this one run. Prints each schedule's planned and measured step time and the
# measured ratio to the winner's next to the planned one.
#   bench/plan_runtime_bench.sh [path/to/dualpipe]
set -euo pipefail
dualpipe=${1:-build/bin/dualpipe}
costs=F=40,B=80,W=40,FB=120
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dualpipe" plan --ranks 4 --microbatches 8 --costs "$costs" --format json \
  --save "$work/winner.json" >"$work/plan.json"
planned() {  # step time the plan gives schedule $1 (ms)
  /usr/bin/python3 -c "import json,sys; print(next(c['step_time'] for c in \
json.load(open(sys.argv[1]))['candidates'] if c['schedule'] == sys.argv[2]))" "$work/plan.json" "$1"
}
# NOTE: `bench runtime --emulate` costs are per stage; the plan's are per rank share of the
# model, so a V (2 stages per rank, each half a share) runs stages of half the costs.
stage_costs() {  # emulated stage costs for a schedule with $1 stages per direction on 4 ranks
  if [ "$1" = 8 ]; then echo F=20,B=40,W=20,FB=60; else echo "$costs"; fi
}
stages_of() {  # stages per direction of schedule $1 on 4 ranks
  "$dualpipe" sim --schedule "$1" --ranks 4 --microbatches 8 --format json |
    /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['stages'])"
}
measured() {  # median step time (s) of `bench runtime`: $1 the stage count, then schedule args
  local stages=$1
  shift
  "$dualpipe" bench runtime "$@" --emulate "$(stage_costs "$stages")" --steps 5 --warmup 1 |
    /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['step_s_median'])"
}
winner=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['winner']['schedule'])" \
  "$work/plan.json")
winner_s=$(measured "$(stages_of "$winner")" --schedule-file "$work/winner.json")
winner_ms=$(planned "$winner")
printf '%-12s planned %6s ms  measured %.4f s  ratio to the winner: planned 1.000 measured 1.000\n' \
  "$winner (file)" "$winner_ms" "$winner_s"
for family in dualpipe zbv zb1p 1f1b; do
  s=$(measured "$(stages_of "$family")" --schedule "$family" --ranks 4 --microbatches 8)
  ms=$(planned "$family")
  /usr/bin/python3 -c "import sys; n,ms,s,wms,ws=sys.argv[1:]; print(f'{n:<12} planned {ms:>6} ms  \
measured {float(s):.4f} s  ratio to the winner: planned {float(ms)/float(wms):.3f} measured \
{float(s)/float(ws):.3f}')" "$family" "$ms" "$s" "$winner_ms" "$winner_s"
done
