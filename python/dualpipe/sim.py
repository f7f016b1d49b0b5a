"""The pipeline simulator: makespan, per-rank bubbles and peak activations of a schedule under
the DualPipe paper's cost terms, and its timeline as SVG or a Chrome trace.

    >>> from dualpipe import schedule, sim
    >>> run = sim.simulate(schedule.build("1f1b", 4, 8), F=1, B=2)
    >>> run.makespan, run.ranks[0].bubble
    (33.0, 9.0)
    >>> run.write_svg("1f1b.svg"); run.write_chrome_trace("1f1b.json")

Times are in the costs' units. ``W`` is the deferred weight-gradient part of ``B`` (a ``B`` that
defers it costs ``B - W``), ``FB`` an overlapped forward/backward pair, ``comm`` the latency of a
point-to-point transfer. Bad costs raise ValueError with the values.
"""

from typing import Optional, Sequence

from ._C import sim as _impl
from .schedule import Schedule

RankResult = _impl.RankResult

__all__ = ["simulate", "Simulation", "RankResult"]


class Simulation:
    """One simulated schedule (from simulate())."""

    def __init__(self, result):
        self._result = result
        self.makespan: float = result.makespan
        self.ranks = result.ranks  # ranks[rank]: busy, bubble, peak_activations, ...

    @property
    def busy(self):
        return [rank.busy for rank in self.ranks]

    @property
    def bubble(self):
        return [rank.bubble for rank in self.ranks]

    @property
    def peak_activations(self):
        return [rank.peak_activations for rank in self.ranks]

    @property
    def parameter_copies(self):
        return [rank.parameter_copies for rank in self.ranks]

    @property
    def max_bubble(self) -> float:
        return self._result.max_bubble

    @property
    def max_peak_activations(self) -> int:
        return self._result.max_peak_activations

    @property
    def costs(self) -> str:
        """The costs as ``F=..,B=..,W=..,FB=..,comm=..`` (the CLI's --costs)."""
        return self._result.costs

    @property
    def schedule(self) -> Schedule:
        return self._result.schedule

    @property
    def paper(self):
        """The registry's published bubble/memory figures on these costs (None if unknown)."""
        return self._result.paper

    def svg(self, title: str = "", max_width: float = 2400.0) -> str:
        """The timeline as a self-contained SVG document."""
        return self._result.svg(title, max_width)

    def chrome_trace(self) -> str:
        """The timeline as Chrome trace-event JSON (Perfetto); one cost unit is 1 ms."""
        return self._result.chrome_trace()

    def write_svg(self, path, title: str = "", max_width: float = 2400.0) -> None:
        with open(path, "w") as f:
            f.write(self.svg(title, max_width))

    def write_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.chrome_trace())

    def __repr__(self):
        return (f"Simulation({self.schedule.name}, makespan={self.makespan}, "
                f"max_bubble={self.max_bubble}, costs={self.costs})")


def simulate(schedule: Schedule, F: float = 1.0, B: float = 2.0, W: float = 1.0,
             FB: float = 3.0, comm: float = 0.0,
             stage_scale: Optional[Sequence[float]] = None) -> Simulation:
    """Simulates ``schedule`` (from dualpipe.schedule.build) under the costs.

    ``stage_scale`` optionally multiplies each model stage's costs. Raises ValueError for bad
    costs and RuntimeError when the programs deadlock. Pure; releases the GIL while it runs.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"simulate() takes a dualpipe.schedule.Schedule, got {type(schedule)}")
    return Simulation(_impl.simulate(schedule, float(F), float(B), float(W), float(FB),
                                     float(comm), list(stage_scale or [])))
