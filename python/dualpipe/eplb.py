"""Expert-parallel load balancing: a drop-in for DeepSeek's ``eplb.py`` (deepseek-ai/EPLB) on
the C++ planner.

    >>> import torch
    >>> from dualpipe import eplb
    >>> weight = torch.tensor([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
    ...                        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
    >>> phy2log, log2phy, logcnt = eplb.rebalance_experts(weight, 16, 4, 2, 8)
    >>> phy2log[0].tolist()
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]

Results equal eplb.py's: the planner computes in float32 as eplb.py does (``weight.float()``)
and visits items in ``torch.sort(descending=True)``'s order, so ties (integer token counts tie
often; replicas of one expert always do) break the way they break there.
"""

from typing import List, Tuple

import torch

from ._C import eplb as _impl

__all__ = ["rebalance_experts"]


def _torch_descending_order(weight: List[float]) -> List[int]:
    # NOTE: eplb.py's balanced_packing visits items in weight.float().sort(descending=True)'s
    # order; on CPU that sort is not stable, so only torch itself gives the same order on ties.
    return torch.tensor(weight, dtype=torch.float32).sort(descending=True).indices.tolist()


def rebalance_experts(weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int,
                      num_gpus: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plans which physical expert slot holds which logical expert (eplb.py's entry point).

    Parameters:
        weight: [layers, num_logical_experts] load statistics, any real dtype and device
        num_replicas: physical experts per layer, a multiple of ``num_gpus``
        num_groups: expert groups; num_nodes: server nodes; num_gpus: GPUs. The hierarchical
            policy (groups packed onto nodes) is used when ``num_groups % num_nodes == 0``,
            otherwise the global one (then groups and nodes are not used).

    Returns (on the CPU, int64, as eplb.py):
        phy2log: [layers, num_replicas], the logical expert of each physical slot
        log2phy: [layers, num_logical_experts, max replicas], each expert's slots, -1 padded
        logcnt: [layers, num_logical_experts], each expert's replica count

    Raises TypeError for a weight that is not a real tensor and ValueError, with the values,
    for sizes the planner does not accept or loads that are negative, non-finite or above 1e15.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor [layers, experts], got {type(weight)}")
    if weight.is_complex():
        raise TypeError(f"weight must be real, got dtype {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [layers, experts], got shape {list(weight.shape)}")
    loads = weight.detach().float().cpu()
    phy2log, log2phy, logcnt = _impl.rebalance(loads.tolist(), num_replicas, num_groups,
                                               num_nodes, num_gpus, True,
                                               _torch_descending_order)
    return (torch.tensor(phy2log, dtype=torch.int64), torch.tensor(log2phy, dtype=torch.int64),
            torch.tensor(logcnt, dtype=torch.int64))
