"""The transfer phase: whether an epoch trains on the source domains or on the target.

A neutral module: the data (which loaders to serve), the callbacks (when to switch) and the model (what
to train with after the switch) all need the concept, and none of them should import another for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import lightning as L

Phase = Literal["source", "target"]


class PhaseSchedule(ABC):
    """Decides the phase of every epoch. The trainer callback that implements it (``DomainTransfer``) drives the
    transfer; anyone else asks :func:`current_phase`."""

    @abstractmethod
    def phase_for_epoch(self, epoch: int) -> Phase:
        """The phase of ``epoch`` (0-based), as far as it is known now."""


@runtime_checkable
class PhaseAware(Protocol):
    """A model that wants to know the phase. The schedule calls ``on_transfer_phase`` when the phase changes and
    when it is restored from a checkpoint, in both cases before the optimizers are built."""

    def on_transfer_phase(self, phase: Phase) -> None: ...


def find_schedule(trainer: L.Trainer | None) -> PhaseSchedule | None:
    """The trainer's phase schedule, or None (no trainer, or no transfer configured)."""
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, PhaseSchedule)), None)


def current_phase(trainer: L.Trainer | None, epoch: int | None = None) -> Phase:
    """The phase of ``epoch`` (default: the trainer's current one); ``target`` when no transfer is configured."""
    schedule = find_schedule(trainer)
    if schedule is None:
        return "target"
    return schedule.phase_for_epoch(trainer.current_epoch if epoch is None else epoch)
