#!/usr/bin/env python3
"""PyTorch's own schedule programs, imported by dualpipe (issue 13).

Generates torch.distributed.pipelining's programs for its schedules (get_schedule_ops, the
mock-stage path its visualizer uses; written as its _dump_csv writes them: one csv.writer row per
rank, None as ""), then for each one runs `dualpipe sim --schedule-file x.csv` (import, validate,
simulate) and, for the schedules both have, compares PyTorch's compute order per rank with
dualpipe's (`dualpipe sim --schedule NAME --save ours.csv`). A difference must be one of the
explained ones in KNOWN_DIFFERENCES, else the test fails.

Exit 77 (ctest SKIP_RETURN_CODE) with the reason when no PyTorch with pipelining can be had:
DUALPIPE_PYTORCH_PYTHON names a python to use; else this interpreter, else <build>/venv-pt, else
a venv created there with `pip install torch==<version>+cpu` (the CPU wheel only, never a CUDA
download; DUALPIPE_PYTORCH_NO_INSTALL=1 skips that step).

  pytorch_programs_test.py --cli build/bin/dualpipe --venv build/venv-pt
  pytorch_programs_test.py --write-fixtures tests/data/pytorch-csv   (with torch importable)
"""
import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
TORCH_VERSION = "2.13.0"

# PyTorch schedule class -> (dualpipe schedule, stages per rank, sizes (ranks, micro-batches)).
# Sizes include odd ones where PyTorch accepts them.
CASES = {
    "1F1B": ("1f1b", 1, [(2, 4), (3, 5), (4, 8)]),
    "GPipe": ("gpipe", 1, [(2, 4), (3, 5), (4, 8)]),
    "Interleaved1F1B": ("interleaved-1f1b", 2, [(2, 4), (4, 8)]),
    "LoopedBFS": (None, 2, [(2, 4), (4, 8)]),
    "InterleavedZeroBubble": (None, 2, [(2, 4), (4, 8)]),
    "ZBVZeroBubble": ("zbv", 2, [(2, 4), (4, 8)]),
    "DualPipeV": ("dualpipev", 2, [(2, 4), (3, 7), (4, 8)]),
}


def last_rank_forwards_from_zero(rows):
    """PyTorch's Schedule1F1B._get_pipeline_order numbers the last rank's forwards 1..C instead
    of 0..C-1 (forward_mb starts at 0 and is incremented before the first steady-state forward
    when a rank has no warm-up forwards); its runtime (PipelineScheduleSingle.step) does not read
    pipeline_order, so only the dumped program is off. Corrected: those forwards renumbered."""
    fixed = [list(row) for row in rows]
    fixed[-1] = [renumber_forward(a, -1) for a in rows[-1]]
    return fixed


def weights_in_fifo_order(rows):
    """PyTorch runs a W for a named (stage, micro-batch) (per-stage weight closures); dualpipe's
    executor runs each W from one FIFO of the rank's deferred backwards, so a W naming another
    pending I than the oldest is out of order. Corrected: each W renamed to the oldest pending
    I of its rank (the same work at the same position, the same total weight gradients)."""
    fixed = []
    for row in rows:
        pending, out = [], []
        for action in row:
            if action.startswith("("):
                out.append(action)
                continue
            stage, kind, mb = split_action(action)
            if kind == "I":
                pending.append((stage, mb))
            if kind == "W":
                stage, mb = pending.pop(0)
            out.append(f"{stage}{kind}{mb}")
        fixed.append(out)
    return fixed


def renumber_forward(action, delta):
    if action.startswith("("):
        return action
    stage, kind, mb = split_action(action)
    return f"{stage}{kind}{mb + delta}" if kind == "F" else action


def split_action(action):
    digits = 0
    while digits < len(action) and action[digits].isdigit():
        digits += 1
    end = len(action)
    while end > digits and action[end - 1].isdigit():
        end -= 1
    return int(action[:digits]), action[digits:end], int(action[end:] or -1)


# PyTorch programs our validator rejects, with why (a substring of the error) and the correction
# after which they must import, validate, simulate and (where we have the schedule) equal ours.
KNOWN_REJECTIONS = {
    "1F1B": ("whose forward never runs", last_rank_forwards_from_zero),
    "ZBVZeroBubble": ("W out of FIFO order", weights_in_fifo_order),
}


def find_python(venv):
    """A python with torch.distributed.pipelining's get_schedule_ops, or (None, reason)."""
    probe = "import torch.distributed.pipelining._schedule_visualizer as v; v.get_schedule_ops"
    candidates = []
    if os.environ.get("DUALPIPE_PYTORCH_PYTHON"):
        candidates.append(os.environ["DUALPIPE_PYTORCH_PYTHON"])
    candidates.append(sys.executable)
    venv_python = os.path.join(venv, "bin", "python") if venv else None
    if venv_python:
        candidates.append(venv_python)
    for python in candidates:
        if os.path.exists(python) and subprocess.run(
            [python, "-c", probe], capture_output=True
        ).returncode == 0:
            return python, None
    if not venv:
        return None, "no PyTorch with torch.distributed.pipelining is importable"
    if os.environ.get("DUALPIPE_PYTORCH_NO_INSTALL"):
        return None, "no PyTorch with pipelining; DUALPIPE_PYTORCH_NO_INSTALL forbids installing one"
    creators = [sys.executable] + ([shutil.which("python3")] if shutil.which("python3") else [])
    for creator in creators:
        shutil.rmtree(venv, ignore_errors=True)
        if subprocess.run([creator, "-m", "venv", venv], capture_output=True).returncode != 0:
            continue
        pip = subprocess.run(
            [venv_python, "-m", "pip", "install", "--only-binary=:all:",
             f"torch=={TORCH_VERSION}+cpu"], capture_output=True, text=True)
        if pip.returncode == 0 and subprocess.run(
            [venv_python, "-c", probe], capture_output=True
        ).returncode == 0:
            return venv_python, None
        shutil.rmtree(venv, ignore_errors=True)
        last = (pip.stderr or pip.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"pip install torch=={TORCH_VERSION}+cpu failed: {last[0]}"
    return None, "no PyTorch with pipelining and no python that can create a venv"


GENERATOR = r"""
import csv, io, json, sys, warnings
warnings.filterwarnings("ignore")
import torch
from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops
from torch.distributed.pipelining.schedules import get_schedule_class
out = {"version": torch.__version__, "programs": {}}
for name, spr, sizes in json.loads(sys.argv[1]):
    try:
        get_schedule_class(name)
    except ValueError:
        continue  # a schedule this PyTorch does not have
    for ranks, microbatches in sizes:
        key = f"{name}_pp{ranks}_c{microbatches}"
        try:
            ops = get_schedule_ops(name, ranks, microbatches, spr if spr > 1 else None)
        except Exception as e:  # sizes this PyTorch refuses
            out["programs"][key] = {"error": f"{type(e).__name__}: {e}"}
            continue
        text = io.StringIO()
        writer = csv.writer(text)
        for row in ops:
            writer.writerow(row)
        out["programs"][key] = {"csv": text.getvalue()}
print(json.dumps(out))
"""


def generate(python):
    spec = [(name, spr, sizes) for name, (_, spr, sizes) in CASES.items()]
    run = subprocess.run([python, "-c", GENERATOR, json.dumps(spec)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"generating PyTorch's programs failed:\n{run.stderr}")
    return json.loads(run.stdout)


def compute_rows(csv_text):
    """Per rank, the compute actions in order (bubbles and FSDP/reduction steps dropped)."""
    rows = []
    for row in csv.reader(io.StringIO(csv_text)):
        rows.append([a for a in (f.strip() for f in row)
                     if a and not a.endswith(("REDUCE_GRAD", "UNSHARD", "RESHARD"))])
    return rows


def sim(cli, *args):
    return subprocess.run([cli, "sim", *args], capture_output=True, text=True)


def registered(cli, name):
    run = sim(cli, "--schedule", name, "--ranks", "2", "--microbatches", "4", "--format", "json")
    return "unknown schedule" not in run.stderr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli")
    parser.add_argument("--venv")
    parser.add_argument("--write-fixtures")
    args = parser.parse_args()
    python, reason = find_python(args.venv)
    if python is None:
        print(f"SKIP: {reason}")
        return SKIP
    generated = generate(python)
    print(f"PyTorch {generated['version']}: {len(generated['programs'])} programs")
    if args.write_fixtures:
        for key, program in generated["programs"].items():
            if "csv" in program:
                with open(os.path.join(args.write_fixtures, key + ".csv"), "w", newline="") as f:
                    f.write(program["csv"])
        return 0
    failures = []
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        for key, program in sorted(generated["programs"].items()):
            failure = check_program(args.cli, tmp, key, program)
            compared += failure is None and CASES[key.split("_pp")[0]][0] is not None
            if failure:
                failures.append(failure)
    for failure in failures:
        print("FAIL:", failure)
    print(f"{compared} programs of schedules dualpipe has checked; {len(failures)} failures")
    return 1 if failures else 0


def check_program(cli, tmp, key, program):
    """None when PyTorch's program imports, validates and simulates (or is rejected for an
    explained reason that, once corrected, imports) and its compute order equals ours where we
    have the schedule (or differs as explained); else what failed."""
    name = key.split("_pp")[0]
    ours_name, spr, _ = CASES[name]
    if "error" in program:
        print(f"{key}: PyTorch refuses these sizes ({program['error']})")
        return None
    theirs = compute_rows(program["csv"])
    ranks, microbatches = len(theirs), int(key.rsplit("_c", 1)[1])
    have = ours_name is not None and registered(cli, ours_name)
    path = os.path.join(tmp, key + ".csv")
    write(path, program["csv"])
    family = ours_name if have else first_with_placement(cli, path)
    if family is None:
        print(f"{key}: no registered dualpipe family has this placement; not imported")
        return None
    imported = sim(cli, "--schedule-file", path, "--schedule", family, "--format", "json")
    if imported.returncode != 0:
        fix = KNOWN_REJECTIONS.get(name)
        if fix is None or fix[0] not in imported.stderr:
            return f"{key}: import as {family} failed: {imported.stderr.strip()}"
        print(f"{key}: rejected as explained ({fix[0]}): {fix[1].__doc__.strip().splitlines()[0]}")
        theirs = fix[1](theirs)
        write(path, "".join(",".join(row) + "\r\n" for row in theirs))
        imported = sim(cli, "--schedule-file", path, "--schedule", family, "--format", "json")
        if imported.returncode != 0:
            return f"{key}: corrected program still fails: {imported.stderr.strip()}"
    result = json.loads(imported.stdout)
    print(f"{key}: imported as {result['schedule']}, validated, simulated: makespan "
          f"{result['makespan']}, peak activations {result['peak_activations']}")
    if not have:
        return None
    saved = os.path.join(tmp, key + ".ours.csv")
    extra = ["--stages-per-rank", str(spr)] if spr > 1 and ours_name == "interleaved-1f1b" else []
    ours_run = sim(cli, "--schedule", ours_name, "--ranks", str(ranks), "--microbatches",
                   str(microbatches), *extra, "--save", saved, "--format", "json")
    if ours_run.returncode != 0:
        return f"{key}: building dualpipe's {ours_name} failed: {ours_run.stderr.strip()}"
    with open(saved) as f:
        ours = compute_rows(f.read())
    if theirs == ours:
        print(f"{key}: compute order equal to dualpipe's {ours_name} on every rank")
        return None
    diff = [r for r in range(max(len(ours), len(theirs))) if r >= len(theirs) or r >= len(ours)
            or theirs[r] != ours[r]]
    return (f"{key}: compute order differs from dualpipe's {ours_name} on ranks {diff}; rank "
            f"{diff[0]}: PyTorch {theirs[diff[0]] if diff[0] < len(theirs) else None}, ours "
            f"{ours[diff[0]] if diff[0] < len(ours) else None}")


def write(path, text):
    with open(path, "w", newline="") as f:
        f.write(text)


def first_with_placement(cli, path):
    """For PyTorch schedules dualpipe does not have: the first registered family the CSV reader
    lists as having the file's placement (the name only labels the import)."""
    run = sim(cli, "--schedule-file", path, "--format", "json")
    if run.returncode == 0:
        return json.loads(run.stdout)["schedule"]
    marker = "schedules with this placement: "
    if marker not in run.stderr:
        return None
    first = run.stderr.split(marker, 1)[1].split(",")[0].split(")")[0].strip()
    return None if first == "none" else first


if __name__ == "__main__":
    sys.exit(main())
