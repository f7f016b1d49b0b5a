"""The reference's p2p declarations. The reference needs them to size its receive buffers; our
executor infers shapes from headers it sends with every tensor, so they are optional here: when
both are set, every stage input received from a peer is checked against them (shape and dtype),
and a mismatch fails the step naming both."""

from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["set_p2p_tensor_shapes", "set_p2p_tensor_dtype"]

# NOTE: module-level state, as in the reference (its modules and examples set it once per
# process before the first step).
TENSOR_SHAPES: Optional[List[Tuple[int, ...]]] = None
TENSOR_DTYPE: Optional[torch.dtype] = None


def set_p2p_tensor_shapes(shapes: Sequence[Sequence[int]]) -> None:
    """Declares the shape of each tensor a stage passes to the next (one micro-batch)."""
    global TENSOR_SHAPES
    if not isinstance(shapes, (list, tuple)):
        raise TypeError(f"set_p2p_tensor_shapes takes a list of shapes, got {type(shapes).__name__}")
    checked = []
    for shape in shapes:
        if not isinstance(shape, (list, tuple, torch.Size)) or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"set_p2p_tensor_shapes: each shape must be a tuple of non-negative "
                             f"ints, got {shape!r}")
        checked.append(tuple(shape))
    TENSOR_SHAPES = checked


def set_p2p_tensor_dtype(dtype: torch.dtype) -> None:
    """Declares the dtype of the tensors stages pass to each other."""
    global TENSOR_DTYPE
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"set_p2p_tensor_dtype takes a torch.dtype, got {type(dtype).__name__}")
    TENSOR_DTYPE = dtype
