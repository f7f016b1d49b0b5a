"""dualpipe.Pipeline runs every schedule of the library on the same Python modules: per
micro-batch losses equal bit for bit to the single-process loop over the full model, and
gradients (copies summed by the engine) within cosine distance 1e-13 of it."""

import pytest
import torch
import torch.nn as nn

from dualpipe import Pipeline, local_batch, stages
from ranks import run_ranks
from reference_model import PipelineStage, cal_diff, criterion, ref_step

MICRO_BATCH, SEQ_LEN, HIDDEN = 2, 4, 8


def schedule_check(rank, num_ranks, schedule, num_chunks):
    held = stages(schedule, num_ranks, rank)
    num_stages = 1 + max(stage for r in range(num_ranks) for _, stage in stages(schedule, num_ranks, r))
    torch.manual_seed(11)
    full_model = nn.Sequential(*[PipelineStage(HIDDEN) for _ in range(num_stages)])
    x = torch.randn(num_chunks * MICRO_BATCH, SEQ_LEN, HIDDEN)
    l = torch.randn(num_chunks * MICRO_BATCH, SEQ_LEN, HIDDEN)
    loss_ref, _ = ref_step(x, l, full_model, num_chunks)

    modules = []
    for _, stage in held:
        module = PipelineStage(HIDDEN)
        module.load_state_dict(full_model[stage].state_dict())
        modules.append(module)
    pipeline = Pipeline(schedule, modules, sync_mirror_gradients=True)
    inputs, labels, loss_microbatches = local_batch(schedule, num_ranks, rank, num_chunks, [x], [l])
    loss, _ = pipeline.step(*inputs, num_chunks=num_chunks, criterion=criterion, labels=labels)
    if loss_microbatches:
        assert torch.equal(loss, loss_ref[loss_microbatches]), (loss, loss_ref)
    else:
        assert loss is None
    worst = 0.0
    for module, (_, stage) in zip(modules, held):
        for p, p_ref in zip(module.parameters(), full_model[stage].parameters()):
            worst = max(worst, cal_diff(p.grad, p_ref.grad))
    assert worst < 1e-13, worst
    return worst


@pytest.mark.parametrize("schedule,num_ranks,num_chunks", [
    ("1f1b", 2, 4), ("1f1b", 3, 6), ("zb1p", 2, 4), ("zb1p", 4, 8), ("gpipe", 2, 3),
    ("gpipe", 4, 4), ("dualpipe", 2, 4), ("dualpipev", 2, 4),
])
def test_every_schedule_matches_the_single_process_loop(schedule, num_ranks, num_chunks):
    run_ranks(schedule_check, num_ranks, schedule, num_chunks)
