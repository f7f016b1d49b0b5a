"""The reference package's own check (its example_dualpipe.py), ported to Gloo processes and
run on our engine: per-chunk losses equal bit for bit to the single-process loop over the full
model, gradients within cosine distance 1e-13 after the user's copy-sum, inference losses and
outputs equal."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from dualpipe import DualPipe, DualPipeV, set_p2p_tensor_dtype, set_p2p_tensor_shapes
from ranks import run_ranks
from reference_model import PipelineStage, PlainStage, cal_diff, criterion, ref_step

MICRO_BATCH, SEQ_LEN, HIDDEN = 3, 8, 16


class CountingStage(PipelineStage):
    """Counts the FB pairs that went through the overlap hook."""

    calls = 0

    @classmethod
    def overlapped_forward_backward(cls, *args):
        cls.calls += 1
        return super().overlapped_forward_backward(*args)


STAGES = {"overlap": PipelineStage, "plain": PlainStage, "counting": CountingStage}


def _batch(num_chunks):
    full_x = torch.randn(num_chunks * MICRO_BATCH, SEQ_LEN, HIDDEN)
    full_l = torch.randn(num_chunks * MICRO_BATCH, SEQ_LEN, HIDDEN)
    return full_x, full_l


def _copy(stage_class, module):
    local = stage_class(HIDDEN)
    local.load_state_dict(module.state_dict())
    return local


def _checked_grad_diffs(local_modules, local_full_modules):
    """Cosine distance of each local gradient to the reference's; each must be < 1e-13."""
    diffs = []
    for (name, p), p_ref in zip(local_modules.named_parameters(), local_full_modules.parameters()):
        diffs.append(cal_diff(p.grad, p_ref.grad))
        assert diffs[-1] < 1e-13, f"{name}: cosine distance {diffs[-1]}"
    return diffs


def dualpipe_check(rank, pp_size, num_chunks, stage_name, sync_in_engine):
    stage_class = STAGES[stage_name]
    is_first_rank, is_last_rank = rank == 0, rank == pp_size - 1
    torch.manual_seed(233)
    set_p2p_tensor_shapes([(MICRO_BATCH, SEQ_LEN, HIDDEN)])
    set_p2p_tensor_dtype(torch.float32)
    full_modules = nn.Sequential(*[stage_class(HIDDEN) for _ in range(pp_size)])
    full_x, full_l = _batch(num_chunks)
    loss_ref, output_ref = ref_step(full_x, full_l, full_modules, num_chunks)

    local_full_modules = nn.Sequential(full_modules[rank], full_modules[pp_size - 1 - rank])
    local_modules = nn.Sequential(_copy(stage_class, local_full_modules[0]),
                                  _copy(stage_class, local_full_modules[1]))
    model = DualPipe(local_modules, sync_mirror_gradients=sync_in_engine)
    assert model.overlapped_forward_backward == (stage_name != "plain")
    if is_first_rank:
        x, l = full_x.chunk(2)[0], full_l.chunk(2)[1]
    elif is_last_rank:
        x, l = full_x.chunk(2)[1], full_l.chunk(2)[0]
    else:
        x, l = None, None

    loss, outputs = model.step(x, num_chunks=num_chunks, criterion=criterion, labels=(l,),
                               return_outputs=False)
    if is_first_rank:
        assert torch.equal(loss, loss_ref.chunk(2)[1])
    elif is_last_rank:
        assert torch.equal(loss, loss_ref.chunk(2)[0])
    else:
        assert loss is None
    assert outputs is None

    if not sync_in_engine:  # the reference's users sum the two copies themselves
        for p0, p1 in zip(local_modules[0].parameters(), local_modules[1].parameters()):
            p0all = [torch.empty_like(p0) for _ in range(pp_size)]
            p1all = [torch.empty_like(p1) for _ in range(pp_size)]
            dist.all_gather(p0all, p0.grad)
            dist.all_gather(p1all, p1.grad)
            p0.grad += p1all[pp_size - 1 - rank]
            p1.grad += p0all[pp_size - 1 - rank]
    diffs = _checked_grad_diffs(local_modules, local_full_modules)
    model.zero_grad()

    with torch.no_grad():
        loss, outputs = model.step(x, num_chunks=num_chunks, criterion=criterion, labels=(l,),
                                   return_outputs=True)
    if is_first_rank:
        assert torch.equal(loss, loss_ref.chunk(2)[1])
        assert torch.equal(outputs, output_ref.chunk(2)[1])
    elif is_last_rank:
        assert torch.equal(loss, loss_ref.chunk(2)[0])
        assert torch.equal(outputs, output_ref.chunk(2)[0])
    else:
        assert loss is None and outputs is None
    assert all(p.grad is None or not p.grad.any() for p in local_modules.parameters())
    return max(diffs), CountingStage.calls


def dualpipev_check(rank, pp_size, num_chunks, stage_name):
    stage_class = STAGES[stage_name]
    torch.manual_seed(233)
    set_p2p_tensor_shapes([(MICRO_BATCH, SEQ_LEN, HIDDEN)])
    set_p2p_tensor_dtype(torch.float32)
    full_modules = nn.Sequential(*[stage_class(HIDDEN) for _ in range(pp_size * 2)])
    full_x, full_l = _batch(num_chunks)
    loss_ref, output_ref = ref_step(full_x, full_l, full_modules, num_chunks)

    local_full_modules = nn.Sequential(full_modules[rank], full_modules[pp_size * 2 - 1 - rank])
    local_modules = nn.Sequential(_copy(stage_class, local_full_modules[0]),
                                  _copy(stage_class, local_full_modules[1]))
    model = DualPipeV(local_modules)
    x, l = (full_x, full_l) if rank == 0 else (None, None)

    loss, outputs = model.step(x, num_chunks=num_chunks, criterion=criterion, labels=(l,),
                               return_outputs=False)
    if rank == 0:
        assert torch.equal(loss, loss_ref)
    else:
        assert loss is None
    assert outputs is None
    diffs = _checked_grad_diffs(local_modules, local_full_modules)
    model.zero_grad()

    with torch.no_grad():
        loss, outputs = model.step(x, num_chunks=num_chunks, criterion=criterion, labels=(l,),
                                   return_outputs=True)
    if rank == 0:
        assert torch.equal(loss, loss_ref)
        assert torch.equal(outputs, output_ref)
    else:
        assert loss is None and outputs is None
    return max(diffs)


LONG = os.environ.get("DUALPIPE_LONG_TESTS") == "1"
long_only = pytest.mark.skipif(not LONG, reason="long test: set DUALPIPE_LONG_TESTS=1")


@pytest.mark.parametrize("pp_size,num_chunks,stage_name", [
    (2, 4, "overlap"), (2, 10, "overlap"), (4, 8, "overlap"), (4, 20, "overlap"),
    (4, 12, "plain"),
    pytest.param(6, 20, "overlap", marks=long_only), pytest.param(8, 20, "overlap", marks=long_only),
])
def test_dualpipe_matches_the_single_process_loop(pp_size, num_chunks, stage_name):
    results = run_ranks(dualpipe_check, pp_size, num_chunks, stage_name, False)
    assert max(diff for diff, _ in results) < 1e-13


def test_dualpipe_sums_the_copies_when_asked():
    run_ranks(dualpipe_check, 4, 8, "overlap", True)


def test_fb_pairs_go_through_the_modules_overlap_hook():
    results = run_ranks(dualpipe_check, 2, 10, "counting", False)
    # PP 2, 10 chunks: the main phase of the schedule pairs an F with a B on every rank; the
    # pairs go through the modules' class hook (the inference step has none).
    assert all(calls > 0 for _, calls in results), results


@pytest.mark.parametrize("pp_size,num_chunks", [(1, 2), (1, 6), (2, 4), (2, 10), (3, 6),
                                                (3, 9), (4, 8), (4, 20)])
def test_dualpipev_matches_the_single_process_loop(pp_size, num_chunks):
    diffs = run_ranks(dualpipev_check, pp_size, num_chunks, "overlap")
    assert max(diffs) < 1e-13
