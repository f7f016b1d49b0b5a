"""dualpipe.Pipeline runs every schedule of the library on the same Python modules: per
micro-batch losses equal bit for bit to the single-process loop over the full model, and
gradients (copies summed by the engine) within cosine distance 1e-13 of it."""

import pytest
import torch
import torch.nn as nn

import dualpipe.schedule

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


def _cases():
    """Every registered schedule at 2 and 4 ranks with its smallest accepted micro-batch count
    of at least 2 per rank, plus odd sizes."""
    cases = []
    for name in dualpipe.schedule.names():
        facts = dualpipe.schedule.facts(name)
        for num_ranks in (2, 4):
            num_chunks = facts.smallest_microbatches(num_ranks, 2 * num_ranks)
            if facts.accepts(num_ranks, num_chunks):
                cases.append((name, num_ranks, num_chunks))
    return cases + [("1f1b", 3, 6), ("gpipe", 2, 3), ("dualpipev", 3, 7)]


def test_every_registered_schedule_is_covered():
    assert {name for name, _, _ in _cases()} == set(dualpipe.schedule.names())


@pytest.mark.parametrize("schedule,num_ranks,num_chunks", _cases())
def test_every_schedule_matches_the_single_process_loop(schedule, num_ranks, num_chunks):
    run_ranks(schedule_check, num_ranks, schedule, num_chunks)
