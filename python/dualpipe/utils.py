"""Helpers with the reference package's names and semantics (deepseek-ai/DualPipe's
``dualpipe.utils``): the weight-gradient store that zero-bubble modules defer into, the backward
call that modules' overlap hooks use, and the batch scatter/gather of ``step``."""

import queue
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["WeightGradStore", "run_backward", "scatter", "gather"]


class WeightGradStore:
    """Where modules defer weight-gradient work during zero-bubble backward passes.

    A module's backward checks ``WeightGradStore.enabled``; when set it ``put``s a closure that
    computes its weight gradient instead of computing it. The pipeline (our C++ executor, exactly
    where the reference does) sets ``enabled`` around a deferred backward (``B`` op), ``flush``es
    the closures put during it as one group, and runs the oldest group with ``pop`` at each ``W``
    op. ``clear`` drops everything (each step starts and ends with it).

    NOTE: class-level state, as in the reference, so that modules written for it work unchanged;
    one pipeline steps at a time per process.
    """

    enabled: bool = False
    cache: List[Callable[[], None]] = []
    funcs_queue: "queue.Queue[List[Callable[[], None]]]" = queue.Queue()

    @classmethod
    def put(cls, func: Callable[[], None]) -> None:
        cls.cache.append(func)

    @classmethod
    def flush(cls) -> None:
        cls.funcs_queue.put(cls.cache)
        cls.cache = []

    @classmethod
    def pop(cls) -> None:
        if cls.funcs_queue.empty():
            raise RuntimeError("WeightGradStore.pop: no flushed group is queued (a W op without "
                               "its deferred backward)")
        for func in cls.funcs_queue.get():
            func()

    @classmethod
    def clear(cls) -> None:
        cls.cache = []
        cls.funcs_queue = queue.Queue()


def run_backward(tensors: Sequence[torch.Tensor], grad_tensors: Sequence[torch.Tensor]) -> None:
    """Back-propagates ``grad_tensors`` into the graph of ``tensors``, accumulating into leaves'
    ``.grad`` (the reference's call: no graph kept, unreachable inputs allowed).

    NOTE: straight to the autograd engine, as the reference does: the pipeline frees the data of
    outputs it has sent (autograd keeps what it needs), so torch.autograd.backward's check of
    the gradients' shapes against the outputs' would refuse them."""
    torch.autograd.Variable._execution_engine.run_backward(
        tuple(tensors), tuple(grad_tensors), keep_graph=False, create_graph=False, inputs=(),
        allow_unreachable=True, accumulate_grad=True)


def scatter(inputs: Union[torch.Tensor, Sequence[Optional[torch.Tensor]]], chunks: int,
            dim: int) -> List[Tuple[Optional[torch.Tensor], ...]]:
    """Splits each tensor of ``inputs`` into ``chunks`` parts along ``dim``; returns one tuple per
    micro-batch (``None`` entries stay ``None`` in every micro-batch)."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"scatter takes a tensor or a list/tuple of tensors, got "
                        f"{type(inputs).__name__}")
    for x in inputs:
        if x is not None and not isinstance(x, torch.Tensor):
            raise TypeError(f"scatter: every entry must be a tensor or None, got "
                            f"{type(x).__name__}")
    parts = [x.chunk(chunks, dim=dim) if x is not None else [None] * chunks for x in inputs]
    microbatches = list(zip(*parts))
    return microbatches if microbatches else [() for _ in range(chunks)]


def gather(micro_outputs: Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]],
           dim: int) -> Tuple[torch.Tensor, ...]:
    """Concatenates per-micro-batch outputs along ``dim``: one tensor per output."""
    if isinstance(micro_outputs[0], torch.Tensor):
        micro_outputs = [(x,) for x in micro_outputs]
    return tuple(torch.cat(x, dim=dim) for x in zip(*micro_outputs))
