"""dualpipe.schedule: the C++ registry and builders from Python, held to the reference's recorded
orders (tests/data/reference-order) and to the programs' own invariants."""

import glob
import json
import os

import pytest

from dualpipe import schedule

ORACLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "data",
                                        "reference-order", "*.json")))
COMMUNICATION_PREFIXES = ("sF", "rF", "sB", "rB")


def compute_tokens(ranks):
    return [[t for t in tokens if t != "|" and not t.startswith(COMMUNICATION_PREFIXES)]
            for tokens in ranks]


def communication_tokens(ranks):
    return [sorted(t for t in tokens if t.startswith(COMMUNICATION_PREFIXES)) for tokens in ranks]


def test_names_and_facts():
    assert schedule.names()[:5] == ["dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe"]
    assert {"interleaved-1f1b", "zbv", "v-half", "v-min"} <= set(schedule.names())
    facts = schedule.facts("dualpipe")
    assert facts.name == "dualpipe" and facts.summary
    assert (facts.rank_multiple, facts.microbatch_multiple) == (2, 2)
    assert facts.accepts(4, 8) and not facts.accepts(4, 6) and not facts.accepts(3, 12)
    assert facts.smallest_microbatches(4, at_least=9) == 10
    assert "num_ranks a positive multiple of 2" in facts.accepted_sizes(4)
    assert schedule.facts("1f1b").accepts(3, 1)
    with pytest.raises(ValueError, match="interleaved"):
        schedule.facts("interleaved")


@pytest.mark.parametrize("path", ORACLES, ids=os.path.basename)
def test_tokens_are_the_reference_order(path):
    with open(path) as f:
        oracle = json.load(f)
    s = schedule.build(oracle["schedule"], oracle["pp"], oracle["chunks"])
    ours = s.tokens()
    # The compute order exactly; the same sends and receives (ours are placed by the generic
    # communication pass, as early as needed, not where the reference posts them).
    assert compute_tokens(ours) == compute_tokens(oracle["ranks"])
    assert communication_tokens(ours) == communication_tokens(oracle["ranks"])
    s.validate()
    assert s.problems() == []


def test_oracle_files_are_all_there():
    assert len(ORACLES) == 29


@pytest.mark.parametrize("name,num_ranks,num_microbatches",
                         [("dualpipe", 2, 4), ("dualpipe", 6, 14), ("dualpipev", 1, 2),
                          ("dualpipev", 3, 7), ("1f1b", 5, 3), ("zb1p", 4, 9), ("gpipe", 3, 4)])
def test_programs_hold_every_stage_microbatch_once(name, num_ranks, num_microbatches):
    s = schedule.build(name, num_ranks, num_microbatches)
    assert (s.name, s.num_ranks, s.num_microbatches) == (name, num_ranks, num_microbatches)
    assert len(s.programs) == num_ranks
    per_direction = num_microbatches // s.num_directions
    forwards, backwards, weights = set(), set(), []
    deferred = []
    for rank, program in enumerate(s.programs):
        held = set(s.stages_on(rank))
        for op in program:
            assert op.kind in ("F", "B", "W", "FB", "sendA", "recvA", "sendG", "recvG"), op
            if op.is_communication:
                assert 0 <= op.peer < num_ranks and op.peer != rank, op
                continue
            assert (op.direction, op.stage) in held, (rank, op)
            if op.kind in ("F", "FB"):
                forwards.add((op.direction, op.stage, op.microbatch))
            if op.kind == "B":
                backwards.add((op.direction, op.stage, op.microbatch))
                if op.defer_weight_grad:
                    deferred.append((rank, op.direction, op.stage, op.microbatch))
            if op.kind == "FB":
                assert (op.backward_direction, op.backward_stage) in held, (rank, op)
                backwards.add((op.backward_direction, op.backward_stage, op.backward_microbatch))
            if op.kind == "W":
                weights.append((rank, op.direction, op.stage, op.microbatch))
    expected = {(d, st, m) for d in range(s.num_directions) for st in range(s.num_stages)
                for m in range(per_direction)}
    assert forwards == expected and backwards == expected
    assert sorted(weights) == sorted(deferred)


def test_stages_follow_the_placement():
    assert schedule.stages("dualpipe", 4, 1) == [1, 2]
    assert schedule.stage_instances("dualpipe", 4, 1) == [(0, 1), (1, 2)]
    assert schedule.stages("dualpipev", 3, 0) == [0, 5]
    assert schedule.stages("1f1b", 3, 2) == [2]
    for name in schedule.names():
        s = schedule.build(name, 4, 16)
        for rank in range(4):
            assert schedule.stage_instances(name, 4, rank) == s.stages_on(rank)
    with pytest.raises(ValueError, match="rank=4, num_ranks=4"):
        schedule.stages("dualpipe", 4, 4)
    with pytest.raises(ValueError, match="num_ranks=3"):
        schedule.stages("dualpipe", 3, 0)


def test_json_and_text_round_trip():
    s = schedule.build("dualpipev", 3, 8)
    doc = json.loads(s.to_json())
    assert (doc["schedule"], doc["pp"], doc["chunks"]) == ("dualpipev", 3, 8)
    assert doc["ranks"] == s.tokens()
    assert schedule.from_json(s.to_json()) == s
    assert schedule.from_text(s.to_text()) == s
    assert schedule.from_json(s.to_oracle_json()) == s
    op = s.programs[0][0]
    assert repr(op) == "F(d=0,s=0,m=0)" and op == schedule.from_json(s.to_json()).programs[0][0]
    with pytest.raises(ValueError, match="num_ranks"):
        schedule.from_json('{"schedule": "dualpipe", "pp": 3, "chunks": 6, "ranks": []}')


def test_fb_ops_carry_their_backward_half():
    s = schedule.build("dualpipe", 2, 4)
    fb = [op for op in s.programs[0] if op.kind == "FB"]
    assert len(fb) == 1
    assert (fb[0].direction, fb[0].microbatch) == (1, 1)
    assert (fb[0].backward_direction, fb[0].backward_stage, fb[0].backward_microbatch) == (0, 0, 0)


def test_refusals_name_the_values():
    with pytest.raises(ValueError, match=r"num_ranks=6.*num_microbatches=8|num_microbatches=8"):
        schedule.build("dualpipe", 6, 8)
    with pytest.raises(ValueError, match="zb2p"):
        schedule.build("zb2p", 2, 4)
    with pytest.raises(ValueError, match="num_ranks"):
        schedule.build("gpipe", 0, 4)
    with pytest.raises(TypeError):
        schedule.build("gpipe", "4", 4)


def test_published_figures_are_the_registry_formulas():
    f = schedule.published_figures("1f1b", 4, 8, F=1, B=2, W=1, FB=3)
    assert f.bubble_formula == "(PP-1)(F+B)" and f.bubble == 9
    f = schedule.published_figures("dualpipe", 8, 20, F=1, B=2, W=1, FB=3)
    assert f.bubble == (8 / 2 - 1) * (3 + 2 - 3 * 1) and f.parameter_copies == 2
