"""dualpipe: DeepSeek's DualPipe (and DualPipeV, 1F1B, ZB1P, GPipe, ...) on a C++ executor.

Drop-in for the reference package (deepseek-ai/DualPipe)::

    from dualpipe import DualPipe, DualPipeV, WeightGradStore
    from dualpipe import set_p2p_tensor_shapes, set_p2p_tensor_dtype
    from dualpipe.utils import WeightGradStore, run_backward
"""

import torch  # noqa: F401  (first: the extension takes torch's tensor and process-group types)
import torch.distributed  # noqa: F401

from . import _C  # noqa: F401
from . import eplb, schedule, sim  # noqa: F401  (the planners)
from .comm import set_p2p_tensor_dtype, set_p2p_tensor_shapes
from .pipeline import DualPipe, DualPipeV, Pipeline, local_batch
from .schedule import stage_instances as stages
from .utils import WeightGradStore

__version__ = "0.1.0"
__all__ = ["DualPipe", "DualPipeV", "Pipeline", "WeightGradStore", "set_p2p_tensor_shapes",
           "set_p2p_tensor_dtype", "stages", "local_batch"]
