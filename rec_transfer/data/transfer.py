"""``TransferDataModule``: source domain(s) and one target, serving the loaders of the current phase."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from rec_transfer.data.datamodule import (
    DEFAULT_MAX_LEN,
    SYNTHETIC,
    DomainDataModule,
    make_train_loader,
    same_for_all,
    shared_loader_settings,
)
from rec_transfer.data.formats import check_domain_folder
from rec_transfer.phase import Phase, current_phase, find_schedule
from rec_transfer.text.models import resolve_model


class TransferDataModule(L.LightningDataModule):
    """Source domains for pre-training, a target for transfer.

    Which loaders it serves follows the phase of the current epoch (``rec_transfer.phase``, decided
    by the ``DomainTransfer`` callback; the Trainer must reload dataloaders every epoch). With no
    sources, or no ``DomainTransfer`` callback, it trains on the target alone.

    Args:
        target: the data-poor domain the model is transferred to.
        sources: data-rich domains to pre-train on; batches of several sources are mixed, each
            batch from one domain.
        validate_target_from_start: also validate the target during the source phase (the zero-shot curve).
        validate_sources: validate the sources during the source phase.
        data_root: relative domain paths are resolved against this folder (one option moves all data).
        source_mixing: how a source epoch is shared among the sources: ``1`` every batch of every source once
            (the largest source dominates), ``0`` as many batches from each source (smaller ones repeat, larger
            ones are subsampled), in between ∝ ``batches ** source_mixing``. The epoch's length stays the same.
        max_len: longest history, for every domain that does not set its own ``max_len``; the model reads the
            longest of all domains' (the command line links ``model.max_len`` to it), so it is set in one place.
        joint: also train on the target's training histories during the source phase, as one more domain of the
            mixture (its own batch size). The model at the switch has then seen the target: not zero-shot.
        rehearsal: keep training on the sources after the switch: each target epoch adds ``rehearsal`` source batches
            for each target batch, shared among the sources as ``source_mixing`` says (0: the target alone).

    ``target`` and each source may also be given as dicts, as in a YAML config: ``DomainDataModule`` keyword
    arguments, or ``{"class_path": ..., "init_args": {...}}``.
    """

    def __init__(
        self,
        target: DomainDataModule,
        sources: list[DomainDataModule] | None = None,
        validate_target_from_start: bool = True,
        validate_sources: bool = True,
        data_root: str | None = None,
        source_mixing: float = 1.0,
        max_len: int = DEFAULT_MAX_LEN,
        joint: bool = False,
        rehearsal: float = 0.0,
    ):
        if rehearsal < 0:
            raise ValueError(f"TransferDataModule rehearsal must be >= 0 (0: off), got {rehearsal}")
        super().__init__()
        self.save_hyperparameters(ignore=["target", "sources"])
        self.target = as_domain_module(target)
        self.sources = [as_domain_module(s) for s in sources or []]
        target = self.target
        for m in [*self.sources, target]:
            if not m.max_len_given:
                m.max_len = max_len
        if data_root is not None:
            for m in [*self.sources, target]:
                if not m.path.startswith(SYNTHETIC) and not Path(m.path).is_absolute():
                    m.path = str(Path(data_root) / m.path)
        names = [m.name for m in self.sources] + [target.name]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must be unique, got {names}")
        if self.sources:  # each phase's domains share one training loader: fail now, not at epoch 0
            shared_loader_settings(self._source_phase_modules())
            shared_loader_settings(self._target_phase_modules())

    @property
    def max_len(self) -> int:
        """The longest history of any domain: what the model must read."""
        return max(m.max_len for m in self.domains.values())

    @property
    def target_name(self) -> str:
        return self.target.name

    @property
    def source_names(self) -> list[str]:
        return [m.name for m in self.sources]

    @property
    def domains(self) -> dict[str, DomainDataModule]:
        """Every domain; while a trainer tests or predicts, the target alone (the sources are not read)."""
        fn = getattr(getattr(self.trainer, "state", None), "fn", None)
        evaluating = fn in (TrainerFn.TESTING, TrainerFn.PREDICTING)
        return {m.name: m for m in ([] if evaluating else self.sources) + [self.target]}

    def prepare_data(self) -> None:
        # Every folder and text model first: a mistyped target or model name fails before the sources are read.
        for m in self.domains.values():
            if not m.path.startswith(SYNTHETIC):
                check_domain_folder(m.path)
        for name in sorted({m.text_encoder.model_name for m in self.domains.values() if m.text_encoder is not None}):
            resolve_model(name)
        for m in self.domains.values():
            m.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for m in self.domains.values():
            m.setup(stage)
        widths = {name: m.item_vectors.shape[1] for name, m in self.domains.items() if m.item_vectors is not None}
        if widths:
            why = "one adaptor reads them all, so give every domain the same text_encoder model"
            same_for_all(widths, "the width of item text vectors", why)

    def _phase(self) -> Phase:
        return "source" if self.sources and current_phase(self.trainer) == "source" else "target"

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self._phase() == "source":
            return make_train_loader(self._source_phase_modules(), epoch, self.hparams.source_mixing)
        # Without a transfer schedule: the target alone.
        modules = self._target_phase_modules() if find_schedule(self.trainer) is not None else [self.target]
        if len(modules) == 1:
            return make_train_loader(modules, epoch)
        return make_train_loader(modules, epoch, self.hparams.source_mixing, self.hparams.rehearsal)

    def _source_phase_modules(self) -> list[DomainDataModule]:
        return self.sources + ([self.target] if self.hparams.joint else [])

    def _target_phase_modules(self) -> list[DomainDataModule]:
        """The target first (its batches are drawn as without rehearsal), then the sources if they are rehearsed."""
        return [self.target, *(self.sources if self.hparams.rehearsal > 0 else [])]

    def val_dataloader(self) -> list[DataLoader]:
        if self._phase() == "target":
            return [self.target.val_dataloader()]
        watched = ([self.target] if self.hparams.validate_target_from_start else []) + (
            self.sources if self.hparams.validate_sources else []
        )
        return [m.val_dataloader() for m in watched]

    def test_dataloader(self) -> DataLoader:
        return self.target.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.target.predict_dataloader()


def as_domain_module(spec: DomainDataModule | dict[str, Any]) -> DomainDataModule:
    """A domain given as a module, as ``DomainDataModule`` keyword arguments, or as ``{class_path, init_args}``."""
    if not isinstance(spec, dict):
        return spec
    if "class_path" not in spec:
        return DomainDataModule(**spec)
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module or "rec_transfer.data"), name)
    if not (isinstance(cls, type) and issubclass(cls, DomainDataModule)):
        raise TypeError(f"{spec['class_path']!r} is not a DomainDataModule")
    return cls(**spec.get("init_args", {}))
