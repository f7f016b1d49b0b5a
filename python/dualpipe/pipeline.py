"""DualPipe, DualPipeV and every other schedule of the library over the user's Python modules.

The classes keep the reference package's API (deepseek-ai/DualPipe): ``nn.Module``s holding the
rank's stage modules in ``self.module``, and ``step(*inputs, num_chunks, criterion, labels,
return_outputs) -> (loss, outputs)``. The step itself runs in dualpipe's C++ executor: schedule,
point-to-point communication, receive posting, the W queue and the trace are C++; the GIL is held
only while Python code (the modules, the criterion, the overlap hook) runs.
"""

import datetime
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from . import _C, comm
from .schedule import stage_instances
from .utils import WeightGradStore

__all__ = ["Pipeline", "DualPipe", "DualPipeV", "local_batch"]

Outputs = Optional[Union[torch.Tensor, Tuple[torch.Tensor, ...]]]


def _default_group() -> "dist.ProcessGroup":
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("process_group=None uses torch.distributed's default group, which does "
                           "not exist yet: call torch.distributed.init_process_group('gloo', ...) "
                           "first (or pass process_group=)")
    return dist.distributed_c10d._get_default_group()


def _checked_rank_mapping(rank_mapping: Optional[Sequence[int]], num_ranks: int) -> List[int]:
    if rank_mapping is None:
        return list(range(num_ranks))
    mapping = list(rank_mapping)
    if sorted(mapping) != list(range(num_ranks)) or not all(isinstance(r, int) for r in mapping):
        raise ValueError(f"rank_mapping must be a permutation of 0..{num_ranks - 1} (one pipeline "
                         f"rank per process-group rank), got {mapping}")
    return mapping


def _seconds(timeout: Union[float, int, datetime.timedelta]) -> float:
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"timeout must be a positive number of seconds or a timedelta, got "
                         f"{timeout!r}")
    return float(seconds)


def local_batch(schedule: str, num_ranks: int, rank: int, num_microbatches: int,
                inputs: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] = ()
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[int]]:
    """This rank's share of a global batch (each tensor split along dim 0 into
    ``num_microbatches`` equal micro-batches, direction by direction): the ``inputs`` and
    ``labels`` to pass to ``step`` (empty lists on ranks that take none) and the global
    micro-batch of each entry of the loss ``step`` returns here."""
    return _C.local_batch(schedule, num_ranks, rank, num_microbatches, list(inputs), list(labels))


class Pipeline(nn.Module):
    """This rank's part of a pipeline running schedule ``schedule`` ("dualpipe", "dualpipev",
    "1f1b", "zb1p", "gpipe", ...; see ``dualpipe.schedule.names()``).

    ``modules`` are this rank's stage modules, in the order ``dualpipe.stages(schedule,
    num_ranks, rank)`` names them, (direction, stage) per slot (DualPipe rank r: model stages r
    and R-1-r). ``process_group``
    (default: torch.distributed's default group) is the pipeline group; ``rank_mapping[i]`` is
    the pipeline rank of its rank i. Keyword-only: ``sync_mirror_gradients`` (sum the gradients
    of the two copies of each stage at the end of each training step; off by default, as in the
    reference, whose users sum them themselves), ``timeout`` (every wait for a peer gives up after
    it, naming the peer), ``trace`` (record what each step ran: ``trace_events()``).
    Constructing does not communicate.
    """

    def __init__(self, schedule: str, modules: Sequence[nn.Module], batch_dim: int = 0,
                 process_group: Optional["dist.ProcessGroup"] = None,
                 rank_mapping: Optional[List[int]] = None, *, sync_mirror_gradients: bool = False,
                 timeout: Union[float, datetime.timedelta] = 60.0, trace: bool = False) -> None:
        super().__init__()
        if not isinstance(schedule, str):
            raise TypeError(f"schedule must be a schedule name (str), got {type(schedule).__name__}")
        modules = tuple(modules)
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Module):
                raise TypeError(f"modules[{i}] must be a torch.nn.Module, got {type(m).__name__}")
        if not isinstance(batch_dim, int) or batch_dim < 0:
            raise ValueError(f"batch_dim must be a non-negative int, got {batch_dim!r}")
        self.module = nn.ModuleList(modules)
        self.overlapped_forward_backward = (
            len(modules) > 0 and all(type(m) is type(modules[0]) for m in modules) and
            hasattr(type(modules[0]), "overlapped_forward_backward"))
        self.batch_dim = batch_dim
        self.schedule = schedule
        self.group = process_group if process_group is not None else _default_group()
        self.num_ranks = self.group.size()
        mapping = _checked_rank_mapping(rank_mapping, self.num_ranks)
        self.rank = mapping[self.group.rank()]
        expected = stage_instances(schedule, self.num_ranks, self.rank)
        if len(expected) != len(modules):
            raise ValueError(f"pipeline rank {self.rank} of {schedule!r} on {self.num_ranks} ranks "
                             f"holds {len(expected)} stage modules (direction, stage) = {expected}, "
                             f"got {len(modules)}")
        self.is_first_rank = self.rank == 0
        self.is_last_rank = self.rank == self.num_ranks - 1
        self._takes_labels = _C.takes_labels(schedule, self.num_ranks, self.rank)
        self._engine = _C.Pipeline(schedule, list(modules), self.group, mapping, batch_dim,
                                   bool(sync_mirror_gradients), _seconds(timeout),
                                   self.overlapped_forward_backward, WeightGradStore, bool(trace))

    def step(self, *inputs: Optional[torch.Tensor], num_chunks: int = 0,
             criterion: Optional[Callable[..., torch.Tensor]] = None,
             labels: Sequence[Optional[torch.Tensor]] = [],
             return_outputs: bool = False) -> Tuple[Optional[torch.Tensor], Outputs]:
        """One training step (or, under ``torch.no_grad()``, inference), blocking; every rank of
        the group calls it with the same ``num_chunks``.

        ``inputs``: needed only on ranks holding a first stage (DualPipe: the first rank its half
        of the batch, the last rank the other half; others: rank 0), split into micro-batches
        along ``batch_dim``. ``criterion(*outputs, *labels)`` and ``labels``: needed on ranks
        holding a last stage (DualPipe: labels are crossed, the first rank holds the labels of
        the last rank's inputs). Returns ``(loss, outputs)``: the per-micro-batch losses stacked
        on ranks holding a last stage (``None`` elsewhere or without a criterion), and with
        ``return_outputs`` the last stage's outputs concatenated along ``batch_dim`` (a tensor,
        or a tuple for several outputs; ``None`` elsewhere). Gradients accumulate into the
        modules' ``.grad``: the gradient of the sum of the micro-batch losses.

        Raises TypeError/ValueError for bad arguments before any communication; RuntimeError
        naming the peer when a peer fails or stops answering; an exception raised by a module
        on this rank comes out as itself.
        """
        if isinstance(num_chunks, bool) or not isinstance(num_chunks, int):
            raise TypeError(f"num_chunks must be an int, got {type(num_chunks).__name__}")
        for i, x in enumerate(inputs):
            if x is not None and not isinstance(x, torch.Tensor):
                raise TypeError(f"inputs[{i}] must be a tensor or None, got {type(x).__name__}")
        if isinstance(labels, torch.Tensor):
            labels = (labels,)
        if not isinstance(labels, (list, tuple)):
            raise TypeError(f"labels must be a list or tuple of tensors, got "
                            f"{type(labels).__name__}")
        for i, x in enumerate(labels):
            if x is not None and not isinstance(x, torch.Tensor):
                raise TypeError(f"labels[{i}] must be a tensor or None, got {type(x).__name__}")
        if criterion is not None and not callable(criterion):
            raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
        WeightGradStore.clear()
        try:
            loss, outputs = self._engine.step(list(inputs), num_chunks, criterion, list(labels),
                                              bool(return_outputs), comm.TENSOR_SHAPES,
                                              comm.TENSOR_DTYPE)
        finally:
            WeightGradStore.clear()
        if not return_outputs or not self._takes_labels or not outputs:
            return loss, None
        return loss, outputs[0] if len(outputs) == 1 else tuple(outputs)

    def sync_mirror_gradients(self) -> None:
        """Adds the gradients of the copies of each model stage (DualPipe: rank r's second module
        and rank R-1-r's first) so every copy holds the sum. Blocking; every rank calls it. No-op
        for schedules without copies."""
        self._engine.sync_mirror_gradients()

    def trace_events(self) -> List[Tuple[str, str, int, int]]:
        """What the last step ran on this rank (with ``trace=True``): (name, category, start_us,
        duration_us) per compute op, send, receive and wait."""
        return self._engine.trace_events()


class DualPipe(Pipeline):
    """The reference's ``DualPipe(modules, batch_dim=0, process_group=None, rank_mapping=None)``:
    ``modules`` = (model stage r, model stage R-1-r) on pipeline rank r of an even number R."""

    def __init__(self, modules: Tuple[nn.Module, nn.Module], batch_dim: int = 0,
                 process_group: Optional["dist.ProcessGroup"] = None,
                 rank_mapping: Optional[List[int]] = None, **options) -> None:
        super().__init__("dualpipe", modules, batch_dim, process_group, rank_mapping, **options)


class DualPipeV(Pipeline):
    """The reference's ``DualPipeV(modules, batch_dim=0, process_group=None, rank_mapping=None)``:
    ``modules`` = (model stage r, model stage 2R-1-r) on pipeline rank r; inputs, labels, loss
    and outputs live on rank 0."""

    def __init__(self, modules: Tuple[nn.Module, nn.Module], batch_dim: int = 0,
                 process_group: Optional["dist.ProcessGroup"] = None,
                 rank_mapping: Optional[List[int]] = None, **options) -> None:
        super().__init__("dualpipev", modules, batch_dim, process_group, rank_mapping, **options)
