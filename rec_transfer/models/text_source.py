"""The trainable item text of a model: one language model, whose top layers train, shared by every domain."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rec_transfer.models.components.item_text import FrozenItemText, TrainableItemText


def item_text_source(text, trainer, hparams) -> FrozenItemText | TrainableItemText | None:
    """What the item tower of a model (its ``hparams``: ``mode``, ``text_write_back``) reads text from, given the
    first domain's ``text``: frozen vectors, or the language model of the ``trainer``'s data with trainable top layers
    (every domain must name the same one); None: no text (or an ID model)."""
    if text is None or hparams.mode == "id":
        return None
    if isinstance(text, torch.Tensor):
        return FrozenItemText(text.shape[1])
    return trainable_item_text(trainer.datamodule.domains.values(), hparams.text_write_back)


def trainable_item_text(domains: Iterable, write_back: bool = False) -> TrainableItemText:
    """Builds the trainable top layers of the language model that the data's domains name.

    Args:
        domains: every domain of the data module (``DomainDataModule``); all those with a text encoder must name the
            same language model.
        write_back: each step's recomputed rows are written to the bank (``TrainableItemText``).

    Raises:
        ValueError: two domains name different language models.
    """
    domains = [d for d in domains if d.text_encoder is not None]
    config = domains[0].text_encoder
    for d in domains[1:]:
        if d.text_encoder.model_key != config.model_key:
            raise ValueError(
                f"domains {domains[0].name!r} and {d.name!r} use different trainable text encoders "
                f"({config.model_key} against {d.text_encoder.model_key}): one model trains one language model"
            )
    top = config.text_top(check_texts=domains[0].domain.texts()[:8], cache_dir=domains[0].cache_dir)
    return TrainableItemText(top, center=config.center, whiten=config.whiten, write_back=write_back)


def items_to_train(batch: dict, cap: int) -> torch.Tensor:
    """The batch's items (inputs and targets) whose language-model path gets gradients this step: at most ``cap``,
    drawn at random."""
    items = torch.unique(torch.cat([batch["input"].flatten(), batch["target"].flatten()]))
    items = items[items > 0]
    return items[torch.randperm(len(items), device=items.device)[:cap]] if len(items) > cap else items
