"""dualpipe.eplb.rebalance_experts against an independent plain-torch implementation of the EPLB
algorithm (deepseek-ai/EPLB eplb.py, as described there: pack expert groups onto nodes, replicate
the hottest experts within each node, pack the replicas onto the node's GPUs; float32 arithmetic;
items visited in torch.sort(descending=True)'s order; the first lightest pack, the first expert of
highest load per replica)."""

import pytest
import torch

from dualpipe import eplb
from dualpipe import _C

# deepseek-ai/EPLB README example: 2 layers, 12 experts, 16 replicas, 4 groups, 2 nodes, 8 GPUs.
README_WEIGHT = torch.tensor([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                              [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
README_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                  [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]


# ---- the oracle --------------------------------------------------------------------------------

def oracle_pack(loads, num_packs):
    """Greedy balanced packing of a 1-D float32 tensor: (pack, position in pack) per item."""
    n = loads.numel()
    per_pack = n // num_packs
    if per_pack == 1:  # one item per pack: item i in pack i
        return list(range(n)), [0] * n
    pack_load = torch.zeros(num_packs, dtype=torch.float32)
    pack_size = [0] * num_packs
    pack, position = [None] * n, [None] * n
    for item in loads.sort(descending=True).indices.tolist():
        open_packs = [p for p in range(num_packs) if pack_size[p] < per_pack]
        best = open_packs[0]
        for p in open_packs[1:]:
            if pack_load[p].item() < pack_load[best].item():
                best = p
        pack[item], position[item] = best, pack_size[best]
        pack_load[best] += loads[item]
        pack_size[best] += 1
    return pack, position


def oracle_replicate(loads, num_physical):
    """Adds replicas one by one to the expert with the highest load per replica (first on ties).
    Returns (expert of each physical slot, replica index of each slot, replica counts)."""
    n = loads.numel()
    count = torch.ones(n, dtype=torch.int64)
    expert, replica = list(range(n)), [0] * n
    for _ in range(num_physical - n):
        per_replica = (loads / count).tolist()
        best = max(range(n), key=lambda e: (per_replica[e], -e))
        expert.append(best)
        replica.append(int(count[best]))
        count[best] += 1
    return expert, replica, count.tolist()


def oracle_rebalance(weight, num_replicas, num_groups, num_nodes, num_gpus):
    weight = weight.float()
    num_layers, num_experts = weight.shape
    if num_groups % num_nodes != 0:
        num_groups = num_nodes = 1
    group_size = num_experts // num_groups
    gpus_per_node = num_gpus // num_nodes
    slots_per_node = num_replicas // num_nodes
    slots_per_gpu = num_replicas // num_gpus
    group_loads = weight.view(num_layers, num_groups, group_size).sum(-1)
    phy2log = [[None] * num_replicas for _ in range(num_layers)]
    slot_replica = [[None] * num_replicas for _ in range(num_layers)]
    logcnt = [[None] * num_experts for _ in range(num_layers)]
    for layer in range(num_layers):
        group_node, group_position = oracle_pack(group_loads[layer], num_nodes)
        for node in range(num_nodes):
            groups = sorted((g for g in range(num_groups) if group_node[g] == node),
                            key=lambda g: group_position[g])
            experts = [g * group_size + i for g in groups for i in range(group_size)]
            loads = weight[layer, experts]
            local, replica, count = oracle_replicate(loads, slots_per_node)
            per_slot = loads[local] / torch.tensor(count)[local]
            gpu, position = oracle_pack(per_slot, gpus_per_node)
            for p in range(slots_per_node):
                slot = node * slots_per_node + gpu[p] * slots_per_gpu + position[p]
                phy2log[layer][slot] = experts[local[p]]
                slot_replica[layer][slot] = replica[p]
            for j, e in enumerate(experts):
                logcnt[layer][e] = count[j]
    max_count = max(max(row) for row in logcnt)
    log2phy = torch.full((num_layers, num_experts, max_count), -1, dtype=torch.int64)
    for layer in range(num_layers):
        for slot in range(num_replicas):
            log2phy[layer, phy2log[layer][slot], slot_replica[layer][slot]] = slot
    return torch.tensor(phy2log), log2phy, torch.tensor(logcnt)


# ---- comparisons -------------------------------------------------------------------------------

def gpu_loads(weight, phy2log, logcnt, num_gpus):
    """[layers, gpus]: each expert's load split evenly over its replicas, summed per GPU."""
    weight = weight.double()
    per_slot = weight.gather(1, phy2log) / logcnt.double().gather(1, phy2log)
    return per_slot.view(weight.shape[0], num_gpus, -1).sum(-1)


def assert_tie_equivalent(weight, got, expected, num_gpus):
    """Same replica counts and the same load on every GPU (what ties may not change), and
    consistent maps."""
    phy2log, log2phy, logcnt = got
    assert torch.equal(logcnt, expected[2])
    assert torch.allclose(gpu_loads(weight, phy2log, logcnt, num_gpus),
                          gpu_loads(weight, expected[0], expected[2], num_gpus), rtol=1e-6)
    for layer in range(phy2log.shape[0]):
        for e in range(logcnt.shape[1]):
            slots = log2phy[layer, e][log2phy[layer, e] >= 0]
            assert slots.numel() == logcnt[layer, e]
            assert (phy2log[layer, slots] == e).all()


def assert_same(got, expected):
    for name, g, e in zip(("phy2log", "log2phy", "logcnt"), got, expected):
        assert g.dtype == torch.int64, name
        assert g.shape == e.shape, (name, g.shape, e.shape)
        assert torch.equal(g, e), (name, g, e)


# ---- tests -------------------------------------------------------------------------------------

def test_readme_example():
    got = eplb.rebalance_experts(README_WEIGHT, 16, 4, 2, 8)
    assert got[0].tolist() == README_PHY2LOG
    assert got[1].shape == (2, 12, 2) and got[2].shape == (2, 12)
    assert_same(got, oracle_rebalance(README_WEIGHT, 16, 4, 2, 8))


# (layers, experts, replicas, groups, nodes, gpus): hierarchical and global (groups % nodes != 0,
# groups then need not divide the experts) policies, one item per pack, and packings of more
# than 16 items (where CPU torch.sort is not stable).
SIZES = [
    (2, 12, 16, 4, 2, 8),
    (3, 12, 16, 3, 2, 8),      # global
    (2, 12, 16, 5, 2, 4),      # global, 5 groups do not divide 12 experts
    (2, 10, 15, 7, 3, 3),      # global, 7 groups on 3 nodes
    (3, 64, 80, 8, 2, 8),
    (2, 64, 64, 8, 4, 16),     # no redundant experts
    (2, 256, 288, 8, 4, 32),   # DeepSeek-V3's sizes
    (2, 48, 96, 1, 1, 4),      # global, 24 replicas per GPU
    (2, 40, 60, 20, 4, 4),     # 20 groups on 4 nodes, one GPU per node
    (1, 7, 7, 7, 7, 7),        # one expert per GPU
]
LOADS = ["float", "integer_ties", "few_values", "zeros"]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("loads", LOADS)
def test_equals_the_oracle_on_random_loads(sizes, loads):
    layers, experts, replicas, groups, nodes, gpus = sizes
    generator = torch.Generator().manual_seed(SIZES.index(sizes) * len(LOADS) + LOADS.index(loads))
    for trial in range(3):
        if loads == "float":
            weight = torch.rand(layers, experts, generator=generator, dtype=torch.float64) * 1e3
        elif loads == "integer_ties":
            weight = torch.randint(0, 20, (layers, experts), generator=generator)
        elif loads == "few_values":
            weight = torch.randint(0, 3, (layers, experts), generator=generator).to(torch.int32)
        else:
            weight = torch.zeros(layers, experts, dtype=torch.float16)
        expected = oracle_rebalance(weight, replicas, groups, nodes, gpus)
        got = eplb.rebalance_experts(weight, replicas, groups, nodes, gpus)
        # Our planner visits items in torch.sort's order, as the oracle (and eplb.py) do: equal
        # also where loads tie.
        assert_same(got, expected)
        assert_tie_equivalent(weight, got, expected, gpus)


def test_planner_order_alone_is_tie_equivalent_under_the_global_policy():
    # The C++ planner's own (stable) order breaks ties differently from torch.sort beyond 16
    # items; under the global policy only equal-weight replicas swap places, so replica counts
    # and per-GPU loads stay those of eplb.py.
    generator = torch.Generator().manual_seed(7)
    differs = False
    for _ in range(5):
        weight = torch.randint(0, 4, (2, 48), generator=generator)
        expected = oracle_rebalance(weight, 96, 1, 1, 4)
        p2l, l2p, cnt = _C.eplb.rebalance(weight.float().tolist(), 96, 1, 1, 4, True, None)
        got = tuple(torch.tensor(x, dtype=torch.int64) for x in (p2l, l2p, cnt))
        assert_tie_equivalent(weight, got, expected, 4)
        differs = differs or not torch.equal(got[1], expected[1])
    assert differs, "expected torch.sort's order to break some tie differently from a stable sort"


def test_float32_arithmetic_as_eplb():
    # 2^24 + 1 rounds to 2^24 in float32: both experts tie and the first gets the replica.
    weight = torch.tensor([[16777216.0, 16777217.0]], dtype=torch.float64)
    _, _, logcnt = eplb.rebalance_experts(weight, 3, 1, 1, 1)
    assert logcnt.tolist() == [[2, 1]]
    assert_same(eplb.rebalance_experts(weight, 3, 1, 1, 1), oracle_rebalance(weight, 3, 1, 1, 1))


def test_inputs_on_any_dtype_and_errors_with_values():
    for dtype in (torch.int64, torch.int16, torch.float32, torch.float64, torch.bfloat16):
        got = eplb.rebalance_experts(README_WEIGHT.to(dtype), 16, 4, 2, 8)
        assert got[0].tolist() == README_PHY2LOG
    with pytest.raises(ValueError, match="num_replicas=18"):
        eplb.rebalance_experts(README_WEIGHT, 18, 4, 2, 8)
    with pytest.raises(ValueError, match="num_experts=12.*num_groups=8"):
        eplb.rebalance_experts(README_WEIGHT, 16, 8, 2, 8)
    with pytest.raises(ValueError, match="num_nodes=4"):
        eplb.rebalance_experts(README_WEIGHT, 18, 4, 4, 6)
    with pytest.raises(ValueError, match=r"shape \[12\]"):
        eplb.rebalance_experts(README_WEIGHT[0], 16, 4, 2, 8)
    with pytest.raises(ValueError, match="expert 3"):
        eplb.rebalance_experts(torch.tensor([[1.0, 2.0, 3.0, float("nan")]]), 4, 1, 1, 2)
    with pytest.raises(TypeError, match="Tensor"):
        eplb.rebalance_experts(README_WEIGHT.tolist(), 16, 4, 2, 8)
    with pytest.raises(TypeError):
        eplb.rebalance_experts(README_WEIGHT, 16.5, 4, 2, 8)
