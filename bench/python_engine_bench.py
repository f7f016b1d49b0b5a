"""The Python package on our engine against the same model as native C++ stages.

The reference example's model (Linear(H,4H)-GELU-Linear(4H,H) stages without biases, weight
gradients deferred to W ops: through dualpipe.utils.WeightGradStore in Python, through
runtime::Linear in C++), 20 chunks of 3 x 64 x 256, fp32, one intra-op thread per rank, DualPipe
at PP 2, 4 and 8. Python: one process per rank on torch.distributed's Gloo group, modules written
as the reference's examples write them (tests/python/reference_model.py). C++: `dualpipe bench
runtime` (ranks as threads of one process). Prints one JSON line per PP with both median step
times and their ratio (target: python/native <= 1.1).

    PYTHONPATH=build/python /usr/bin/python3 bench/python_engine_bench.py [--ranks 2 4 8]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

MICRO_BATCH, SEQ_LEN, HIDDEN, CHUNKS = 3, 64, 256, 20


def rank_main(rank, world_size, store_path, steps, warmup, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=world_size)
    from dualpipe import DualPipe
    from reference_model import PipelineStage, criterion

    torch.manual_seed(rank)
    model = DualPipe([PipelineStage(HIDDEN), PipelineStage(HIDDEN)])
    ends = rank in (0, world_size - 1)
    x = torch.randn(CHUNKS // 2 * MICRO_BATCH, SEQ_LEN, HIDDEN) if ends else None
    l = torch.randn(CHUNKS // 2 * MICRO_BATCH, SEQ_LEN, HIDDEN) if ends else None
    times = []
    for step in range(warmup + steps):
        model.zero_grad()
        dist.barrier()
        start = time.perf_counter()
        model.step(x, num_chunks=CHUNKS, criterion=criterion, labels=(l,))
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step ends when its last rank does
        if step >= warmup:
            times.append(elapsed.item())
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def python_step_s(ranks, steps, warmup):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(rank_main, args=(ranks, os.path.join(tmp, "store"), steps, warmup,
                                            queue), nprocs=ranks, start_method="spawn")
        return statistics.median(queue.get())


def native_step_s(cli, ranks, steps, warmup):
    out = subprocess.run([cli, "bench", "runtime", "--schedule", "dualpipe", "--ranks",
                          str(ranks), "--microbatches", str(CHUNKS), "--mbs", str(MICRO_BATCH),
                          "--seq", str(SEQ_LEN), "--hidden", str(HIDDEN), "--steps", str(steps),
                          "--warmup", str(warmup)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s_median"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cli", default=os.path.join(HERE, "..", "build", "bin", "dualpipe"))
    args = parser.parse_args()
    for ranks in args.ranks:
        native = native_step_s(args.cli, ranks, args.steps, args.warmup)
        python = python_step_s(ranks, args.steps, args.warmup)
        print(json.dumps({"schedule": "dualpipe", "ranks": ranks, "microbatches": CHUNKS,
                          "steps": args.steps, "native_step_s_median": round(native, 4),
                          "python_step_s_median": round(python, 4),
                          "python_over_native": round(python / native, 3),
                          "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
