"""Train a two-stage model with DualPipe from Python: the reference package's API on dualpipe's
C++ engine. Two ranks (processes) on Gloo; each holds stage r and a copy of stage R-1-r.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/dualpipe_two_ranks.py

Exits non-zero when training did not reduce the loss.
"""

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from dualpipe import DualPipe
from dualpipe.utils import WeightGradStore

RANKS, CHUNKS, MICRO_BATCH, HIDDEN, STEPS = 2, 8, 4, 32, 30


class LinearFunc(torch.autograd.Function):
    """y = x W^T whose weight gradient waits for the schedule's W op (zero bubble)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors

        def weight_grad():
            g = grad_y.flatten(0, -2).T @ x.flatten(0, -2)
            weight.grad = g if weight.grad is None else weight.grad + g

        if WeightGradStore.enabled:
            WeightGradStore.put(weight_grad)  # run later, by the W op
        else:
            weight_grad()
        return grad_y @ weight, None


class Stage(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4 * HIDDEN, HIDDEN) / HIDDEN**0.5)
        self.w2 = nn.Parameter(torch.randn(HIDDEN, 4 * HIDDEN) / (4 * HIDDEN)**0.5)

    def forward(self, x):
        return x + LinearFunc.apply(F.gelu(LinearFunc.apply(x, self.w1)), self.w2)


def criterion(output, target):
    return F.mse_loss(output, target) / CHUNKS  # the step sums the micro-batch losses


def train(rank, store_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=RANKS)
    torch.manual_seed(0)
    model_stages = [Stage() for _ in range(RANKS)]  # the same model on every rank
    # This rank's modules: stage r and a copy of stage R-1-r; the engine sums the copies'
    # gradients at the end of each step (the reference leaves that to the user).
    model = DualPipe([model_stages[rank], model_stages[RANKS - 1 - rank]],
                     sync_mirror_gradients=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    target = torch.nn.Linear(HIDDEN, HIDDEN)  # a function to learn
    first_loss = last_loss = None
    for step in range(STEPS):
        x = torch.randn(CHUNKS * MICRO_BATCH, HIDDEN)
        with torch.no_grad():
            y = target(x)
        # DualPipe feeds both ends: rank 0 the first half of the inputs and the second half's
        # labels, the last rank the reverse; middle ranks pass None.
        half = CHUNKS * MICRO_BATCH // 2
        inputs, labels = (x[:half], y[half:]) if rank == 0 else (x[half:], y[:half])
        optimizer.zero_grad()
        loss, _ = model.step(inputs, num_chunks=CHUNKS, criterion=criterion, labels=(labels,))
        optimizer.step()
        total = loss.sum()
        dist.all_reduce(total)
        if rank == 0 and step % 10 == 0:
            print(f"step {step:2d}  loss {total.item():.4f}", flush=True)
        first_loss = total.item() if first_loss is None else first_loss
        last_loss = total.item()
    dist.destroy_process_group()
    if last_loss >= first_loss:
        sys.exit(f"rank {rank}: the loss did not go down ({first_loss:.4f} -> {last_loss:.4f})")
    if rank == 0:
        print(f"trained: loss {first_loss:.4f} -> {last_loss:.4f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(train, args=(os.path.join(tmp, "store"),), nprocs=RANKS)
