"""Pipeline schedules as data: the C++ registry and builders, from Python.

    >>> from dualpipe import schedule
    >>> schedule.names()
    ['dualpipe', 'dualpipev', '1f1b', 'zb1p', 'gpipe']
    >>> s = schedule.build("dualpipe", num_ranks=4, num_microbatches=10)
    >>> s.programs[0][0]
    F(d=0,s=0,m=0)
    >>> s.tokens()[0][:3]       # the reference-order oracle files' tokens
    ['F0.0', 'sF0.0@1', 'F0.1']

A program is a list of ``Op`` (read-only): ``kind`` ('F', 'B', 'W', 'FB', 'sendA', 'recvA',
'sendG', 'recvG'), ``direction``, ``stage``, ``microbatch``, ``defer_weight_grad``, ``peer``
(communication ops) and, for 'FB', ``backward_direction``/``backward_stage``/
``backward_microbatch``. Sizes a schedule does not accept raise ValueError naming the values and
what is accepted (``facts(name).accepted_sizes(num_ranks)``). ``Schedule.programs`` converts the
C++ programs into new Python lists on every access: keep it in a variable inside loops.
"""

from typing import List, Tuple

from ._C import schedule as _impl

Op = _impl.Op
Schedule = _impl.Schedule
ScheduleFacts = _impl.ScheduleFacts
PublishedFigures = _impl.PublishedFigures

__all__ = ["Op", "Schedule", "ScheduleFacts", "PublishedFigures", "names", "facts", "build",
           "stages", "published_figures", "from_json", "from_text"]


def names() -> List[str]:
    """The schedule names build() accepts."""
    return _impl.names()


def facts(name: str) -> ScheduleFacts:
    """What the named schedule is (summary, accepted sizes). ValueError for an unknown name."""
    return _impl.facts(name)


def build(name: str, num_ranks: int, num_microbatches: int, stages_per_rank: int = 0) -> Schedule:
    """The named schedule's per-rank programs, compute and communication.

    ``num_microbatches`` is the total over all directions (DualPipe: half each way);
    ``stages_per_rank`` is interleaved-1f1b's v (0: the schedule's own). Raises ValueError for an
    unknown name or sizes the schedule does not accept, with the values.
    """
    return _impl.build(name, num_ranks, num_microbatches, stages_per_rank)


def stages(name: str, num_ranks: int, rank: int) -> List[int]:
    """The model stages pipeline rank ``rank`` holds, by slot (its modules' order).

    DualPipe: ``[rank, num_ranks - 1 - rank]``; DualPipeV: ``[rank, 2 * num_ranks - 1 - rank]``;
    1F1B, ZB1P, GPipe: ``[rank]``. Does not depend on the micro-batch count.
    """
    return [stage for _, stage in stage_instances(name, num_ranks, rank)]


def stage_instances(name: str, num_ranks: int, rank: int) -> List[Tuple[int, int]]:
    """(direction, stage) of each stage instance on ``rank``, by slot."""
    if not 0 <= rank < num_ranks:
        raise ValueError(f"rank must be in [0, num_ranks), got rank={rank}, num_ranks={num_ranks}")
    return _impl.placement(name, num_ranks, rank)


def published_figures(name: str, num_ranks: int, num_microbatches: int, *, F: float, B: float,
                      W: float, FB: float) -> PublishedFigures:
    """The bubble and memory formulas the schedule's paper publishes, evaluated on the costs."""
    return _impl.published_figures(name, num_ranks, num_microbatches, F, B, W, FB)


def from_json(text: str) -> Schedule:
    """Reads Schedule.to_json()'s text or a reference-order oracle file (checked)."""
    return _impl.from_json(text)


def from_text(text: str) -> Schedule:
    """Reads Schedule.to_text()'s form (checked)."""
    return _impl.from_text(text)
