"""dualpipe.sim: the simulator from Python, checked against the `dualpipe sim` command's numbers
and against the bubble and memory formulas the schedules' papers publish (written out here)."""

import json
import os
import subprocess

import pytest

import dualpipe._C
from dualpipe import schedule, sim

DUALPIPE_BIN = os.path.join(os.path.dirname(dualpipe._C.__file__), "..", "..", "bin", "dualpipe")


def cli_sim(name, num_ranks, num_microbatches, costs):
    out = subprocess.run([DUALPIPE_BIN, "sim", "--schedule", name, "--ranks", str(num_ranks),
                          "--microbatches", str(num_microbatches), "--costs", costs,
                          "--format", "json"], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    return json.loads(out)


@pytest.mark.parametrize("name,num_ranks,num_microbatches",
                         [("dualpipe", 4, 10), ("dualpipe", 8, 20), ("dualpipev", 3, 9),
                          ("1f1b", 5, 7), ("zb1p", 4, 16), ("gpipe", 3, 5)])
@pytest.mark.parametrize("costs", [dict(F=1, B=2, W=1, FB=3, comm=0),
                                   dict(F=1.5, B=2.5, W=0.75, FB=3.5, comm=0.25)])
def test_numbers_are_the_command_line_simulator(name, num_ranks, num_microbatches, costs):
    run = sim.simulate(schedule.build(name, num_ranks, num_microbatches), **costs)
    text = ",".join(f"{k}={v}" for k, v in costs.items())
    cli = cli_sim(name, num_ranks, num_microbatches, text)
    assert run.makespan == cli["makespan"]
    assert run.max_bubble == cli["max_bubble"]
    assert run.max_peak_activations == cli["peak_activations"]
    assert len(run.ranks) == num_ranks
    for rank, expected in zip(run.ranks, cli["per_rank"]):
        assert rank.busy == expected["busy"]
        assert rank.bubble == expected["bubble"]
        assert rank.peak_activations == expected["peak_activations"]
        assert rank.parameter_copies == expected["parameter_copies"]
    assert run.paper.bubble == cli["paper"]["bubble"]
    assert run.paper.bubble_formula == cli["paper"]["bubble_formula"]


@pytest.mark.parametrize("num_ranks,num_microbatches", [(2, 4), (4, 10), (6, 14), (8, 20)])
def test_dualpipe_idles_the_papers_bubble_with_pp_plus_one_activations(num_ranks,
                                                                      num_microbatches):
    F, B, W, FB = 1.0, 2.0, 1.0, 3.0
    run = sim.simulate(schedule.build("dualpipe", num_ranks, num_microbatches), F=F, B=B, W=W,
                       FB=FB)
    # DeepSeek-V3 report, Table 2: DualPipe's bubble (PP/2-1)(F&B+B-3W), 2x parameters, PP+1
    # activations.
    expected = (num_ranks / 2 - 1) * (FB + B - 3 * W)
    assert run.bubble == [expected] * num_ranks
    assert run.paper.bubble == expected
    assert run.parameter_copies == [2] * num_ranks
    assert run.max_peak_activations == num_ranks + 1
    assert run.makespan == run.ranks[0].busy + expected


@pytest.mark.parametrize("num_ranks,num_microbatches", [(1, 4), (3, 7), (4, 17)])
def test_1f1b_and_zb1p_idle_their_papers_bubbles(num_ranks, num_microbatches):
    run = sim.simulate(schedule.build("1f1b", num_ranks, num_microbatches), F=1.5, B=2.5, W=0.5)
    assert run.bubble == [(num_ranks - 1) * (1.5 + 2.5)] * num_ranks
    assert run.busy == [num_microbatches * (1.5 + 2.5)] * num_ranks
    if num_microbatches >= num_ranks:
        zb = sim.simulate(schedule.build("zb1p", num_ranks, 16), F=1, B=2, W=1)
        assert zb.bubble == [(num_ranks - 1) * (1 + 2 - 2 * 1)] * num_ranks
        assert zb.paper.bubble == (num_ranks - 1) * (1 + 2 - 2 * 1)


def test_dualpipev_bubble_uses_twice_the_ranks_as_pp():
    run = sim.simulate(schedule.build("dualpipev", 4, 12))
    assert run.paper.pp_meaning.startswith("PP=2*ranks")
    assert run.bubble == [(4 - 1) * (3 + 2 - 3 * 1)] * 4
    assert run.peak_activations == [8, 8, 8, 9]


def test_pictures(tmp_path):
    run = sim.simulate(schedule.build("dualpipe", 4, 10), comm=0.5)
    svg = run.svg(title="dualpipe from Python")
    assert svg.startswith("<svg") or svg.startswith("<?xml")
    assert "dualpipe from Python" in svg and svg.rstrip().endswith("</svg>")
    run.write_svg(tmp_path / "t.svg")
    assert (tmp_path / "t.svg").read_text() == run.svg()
    trace = json.loads(run.chrome_trace())
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    compute_ops = sum(1 for program in run.schedule.programs for op in program if op.is_compute)
    assert len(events) == compute_ops
    assert {e["tid"] for e in events} == {0, 1, 2, 3}
    run.write_chrome_trace(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == trace
    # The timeline: one entry per compute op, in time order, ending by the makespan.
    for rank, program in zip(run.ranks, run.schedule.programs):
        assert len(rank.timeline) == sum(op.is_compute for op in program)
        ends = [end for _, _, end in rank.timeline]
        assert ends == sorted(ends) and max(ends) <= run.makespan


def test_bad_costs_and_arguments():
    s = schedule.build("1f1b", 2, 4)
    with pytest.raises(ValueError, match="W"):
        sim.simulate(s, B=1, W=2)
    with pytest.raises(ValueError, match="-1"):
        sim.simulate(s, F=-1)
    with pytest.raises(TypeError, match="Schedule"):
        sim.simulate("1f1b")
    with pytest.raises(ValueError, match="stage"):
        sim.simulate(s, stage_scale=[1.0])
