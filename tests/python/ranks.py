"""Runs a function on N ranks as real processes (torch.multiprocessing, spawn) over Gloo, with
a deadline: a rank that hangs fails the test instead of hanging it."""

import os
import tempfile
import time
import traceback
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world_size: int, store_path: str, result_dir: str,
               fn: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save({"ok": True, "result": result}, os.path.join(result_dir, f"{rank}.pt"))
    except BaseException as e:  # reported to the parent, which fails the test
        torch.save({"ok": False, "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()}, os.path.join(result_dir, f"{rank}.pt"))
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any,
              deadline_s: float = 120) -> List[Any]:
    """Runs fn(rank, world_size, *args) on world_size processes and returns each rank's result.
    Raises AssertionError naming the rank and its traceback when a rank raised, and when the ranks
    did not finish within deadline_s (all processes are killed then). A test of failures lets fn
    catch them and return what it saw."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_rank_main, args=(world_size, os.path.join(tmp, "store"), tmp,
                                                   fn, args),
                                 nprocs=world_size, join=False, start_method="spawn")
        end = time.monotonic() + deadline_s
        failure = None
        try:
            while not ctx.join(timeout=max(0.1, min(1.0, end - time.monotonic()))):
                if time.monotonic() > end:
                    failure = f"ranks did not finish within {deadline_s} s"
                    break
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            failure = str(e)
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        outcomes = []
        for rank in range(world_size):
            path = os.path.join(tmp, f"{rank}.pt")
            outcomes.append(torch.load(path) if os.path.exists(path) else
                            {"ok": False, "error": "no result (the process died or was killed)",
                             "traceback": ""})
        bad = [f"rank {r}: {o['error']}\n{o['traceback']}" for r, o in enumerate(outcomes)
               if not o["ok"]]
        if failure or bad:
            raise AssertionError("\n".join(([failure] if failure else []) + bad))
        return [o["result"] for o in outcomes]
