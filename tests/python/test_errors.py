"""Errors a user meets: a stage that raises in Python (its exception, traceback and all, on its
rank; a named failure on the others, within the timeout, no hang), and wrong arguments
(TypeError/ValueError naming the values, before any communication)."""

import os
import tempfile
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from dualpipe import DualPipe, DualPipeV, Pipeline
from ranks import run_ranks
from reference_model import PipelineStage, criterion

HIDDEN = 8


class StageError(ValueError):
    pass


class FailingStage(PipelineStage):
    """Raises on its third forward."""

    def __init__(self, hidden_size):
        super().__init__(hidden_size)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise StageError(f"stage gave up at call {self.calls}")
        return super().forward(x)


def failing_rank_check(rank, pp_size, failing_rank):
    torch.manual_seed(7)
    stage = FailingStage if rank == failing_rank else PipelineStage
    model = DualPipe([stage(HIDDEN), stage(HIDDEN)], timeout=10)
    x = torch.randn(8 * 2, 4, HIDDEN) if rank in (0, pp_size - 1) else None
    try:
        model.step(x, num_chunks=8, criterion=criterion, labels=(x,))
    except BaseException as e:
        return {"type": type(e).__name__, "message": str(e),
                "traceback": traceback.format_exc()}
    return {"type": None}


def test_a_stage_that_raises_fails_every_rank_with_a_named_cause():
    outcomes = run_ranks(failing_rank_check, 4, 1, deadline_s=90)
    failed = outcomes[1]
    assert failed["type"] == "StageError", failed
    assert "stage gave up at call 3" in failed["message"]
    assert "in forward" in failed["traceback"] and "test_errors.py" in failed["traceback"]
    for rank in (0, 2, 3):
        assert outcomes[rank]["type"] == "RuntimeError", (rank, outcomes[rank])
        assert "rank" in outcomes[rank]["message"]


@pytest.fixture(scope="module")
def one_rank_group():
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}",
                                rank=0, world_size=1)
        yield
        dist.destroy_process_group()


def _stages():
    torch.manual_seed(0)
    return [PipelineStage(HIDDEN), PipelineStage(HIDDEN)]


def test_constructor_arguments_are_checked(one_rank_group):
    with pytest.raises(TypeError, match="modules\\[1\\] must be a torch.nn.Module, got int"):
        DualPipeV([PipelineStage(HIDDEN), 3])
    with pytest.raises(ValueError, match="dualpipe"):
        DualPipe(_stages())  # DualPipe needs an even number of ranks
    with pytest.raises(ValueError, match="holds 2 stage modules.*got 1"):
        DualPipeV(_stages()[:1])
    with pytest.raises(ValueError, match="rank_mapping must be a permutation of 0..0.*\\[1\\]"):
        DualPipeV(_stages(), rank_mapping=[1])
    with pytest.raises(ValueError, match="batch_dim"):
        DualPipeV(_stages(), batch_dim=-1)
    with pytest.raises(TypeError, match="schedule must be"):
        Pipeline(3, _stages())
    with pytest.raises(ValueError, match="timeout"):
        DualPipeV(_stages(), timeout=0)


def test_step_arguments_are_checked(one_rank_group):
    model = DualPipeV(_stages())
    x = torch.randn(4, 2, HIDDEN)
    with pytest.raises(TypeError, match="num_chunks must be an int, got str"):
        model.step(x, num_chunks="4", criterion=criterion, labels=(x,))
    with pytest.raises(TypeError, match="inputs\\[0\\] must be a tensor or None, got list"):
        model.step([x], num_chunks=4, criterion=criterion, labels=(x,))
    with pytest.raises(TypeError, match="labels\\[0\\] must be a tensor or None, got int"):
        model.step(x, num_chunks=4, criterion=criterion, labels=(1,))
    with pytest.raises(TypeError, match="criterion must be callable"):
        model.step(x, num_chunks=4, criterion=3, labels=(x,))
    with pytest.raises(ValueError, match="0"):
        model.step(x, num_chunks=0, criterion=criterion, labels=(x,))
    with pytest.raises(ValueError, match="criterion"):
        model.step(x, num_chunks=4, labels=(x,))
    with pytest.raises(ValueError, match="batch size 4 .*does not split into 3"):
        model.step(x, num_chunks=3, criterion=criterion, labels=(x,))
    loss, _ = model.step(x, num_chunks=4, criterion=criterion, labels=(x,))  # still usable
    assert loss.shape == (4,)


def test_a_criterion_that_returns_no_tensor_is_a_type_error(one_rank_group):
    model = DualPipeV(_stages())
    x = torch.randn(4, 2, HIDDEN)
    with pytest.raises(TypeError, match="criterion.*must return a tensor, got float"):
        model.step(x, num_chunks=2, criterion=lambda y, l: 1.0, labels=(x,))


def test_a_stage_that_returns_no_tensor_is_a_type_error(one_rank_group):
    class Bad(nn.Module):
        def forward(self, x):
            return "not a tensor"

    model = DualPipeV([Bad(), Bad()])
    with pytest.raises(TypeError, match="forward must be a tensor or a list/tuple of tensors, got str"):
        model.step(torch.randn(4, 2), num_chunks=2, criterion=criterion, labels=(torch.randn(4, 2),))


def declared_shape_check(rank, pp_size):
    from dualpipe import set_p2p_tensor_dtype, set_p2p_tensor_shapes
    set_p2p_tensor_shapes([(2, 5, HIDDEN)])  # a micro-batch is really (2, 4, HIDDEN)
    set_p2p_tensor_dtype(torch.float32)
    torch.manual_seed(7)
    model = DualPipe([PipelineStage(HIDDEN), PipelineStage(HIDDEN)], timeout=10)
    x = torch.randn(8, 4, HIDDEN)
    try:
        model.step(x, num_chunks=8, criterion=criterion, labels=(x,))
    except RuntimeError as e:
        return str(e)
    return None


def test_declared_p2p_shapes_are_checked_against_what_is_received():
    messages = run_ranks(declared_shape_check, 2, deadline_s=60)
    assert any(m and "[2, 5, 8]" in m and "[2, 4, 8]" in m and "declared" in m for m in messages), messages
