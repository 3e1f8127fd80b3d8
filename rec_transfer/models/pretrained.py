"""Loading a checkpoint's weights into a model built for the data: starting from an earlier run's weights (not a
resume), whether a checkpoint's item ID tables fit the data's items, and its items' text vectors shaped as in
training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from rec_transfer.models.components.item_text import FrozenItemText
from rec_transfer.text.whitening import VectorShape
from rec_transfer.utils.checkpoints import CheckpointError, NoCheckpoint, load_checkpoint

log = logging.getLogger(__name__)

CATALOGUES = "item_catalogues"  # checkpoint key: {domain: catalogue digest} of the domains with ID tables
TEXT_SHAPES = "text_shapes"  # checkpoint key: {domain: VectorShape.state()} of the frozen text vectors it trained on
ID_TABLES = "item_tower.id_embeddings."  # state-dict prefix of the item ID tables, one per domain
# Weights a checkpoint may hold that a new run need not have, and that it may miss: ID tables of domains this run
# does not serve (the sources'), metric states, the source phase's domain discriminator, the history offset (a
# checkpoint without one leaves it at its start).
OPTIONAL = (ID_TABLES, "val_metrics.", "test_metrics.", "discriminator.", "scorer.history_bias.")


def id_table_mismatch(domain: str, trained_on: str) -> str:
    """Why a checkpoint's item ID table of ``domain``, trained on ``trained_on``, cannot serve the data's items."""
    return (
        f"its item IDs of {domain!r} were trained on {trained_on}: an ID model scores only the items it was trained "
        "on; model.mode text ranks new items by their text"
    )


def _id_domain(key: str) -> str | None:
    """The domain whose ID table state-dict ``key`` belongs to (``None``: not an ID table)."""
    return key.removeprefix(ID_TABLES).rsplit(".", 1)[0] if key.startswith(ID_TABLES) else None


def _check_id_rows(path: str | Path, domain: str, trained_rows: int, data_rows: int) -> None:
    """Refuses an ID table of ``trained_rows`` rows for a domain whose data has ``data_rows`` (padding row included)."""
    if trained_rows != data_rows:
        why = f"{trained_rows - 1} items, the data has {data_rows - 1}"
        raise CheckpointError(path, id_table_mismatch(domain, why))


def check_catalogues(path: str | Path, saved: Mapping[str, str] | None, current: Mapping[str, str]) -> None:
    """Refuses ID tables trained on other items than the data's: ``saved`` and ``current`` map a domain's name to
    ``Domain.catalogue_digest`` (an ID table of the same size over other items would load and score the wrong items).
    A checkpoint written before the digests were kept (``saved`` None) is not checked."""
    for name in sorted(set(saved or {}) & set(current)):
        if saved[name] != current[name]:
            raise CheckpointError(path, id_table_mismatch(name, "other items than the data's (the item ids differ)"))


def fit_id_tables(
    tables: nn.ModuleDict, checkpoint: dict, path: str | Path, catalogues: Mapping[str, str], device: torch.device
) -> None:
    """Before a checkpoint (``--ckpt_path``) loads: creates its ID tables of domains the data does not serve (e.g.
    predicting on the target after transfer) so that its weights load, and refuses the tables of the data's domains
    trained on other items (``catalogues``: ``check_catalogues``)."""
    for key, value in checkpoint["state_dict"].items():
        name = _id_domain(key)
        if name is None:
            continue
        if name not in tables:
            tables[name] = nn.Embedding(*value.shape, padding_idx=0).to(device)
        else:
            _check_id_rows(path, name, len(value), tables[name].num_embeddings)
    check_catalogues(path, checkpoint.get(CATALOGUES), catalogues)


def fit_text_shapes(text: nn.Module | None, checkpoint: dict, shapes: dict[str, VectorShape]) -> None:
    """Before a checkpoint's weights score: each domain's frozen text vectors (``text``) centred (and whitened) as
    when the checkpoint trained, where the data's own centre has moved since (new interactions, a refreshed item
    file). ``shapes`` maps a domain to the shape of the data's vectors, and is updated. A checkpoint written before
    the shapes were kept, a trained language-model top and vectors of another width are left as they are."""
    if not isinstance(text, FrozenItemText):
        return
    for name, state in (checkpoint.get(TEXT_SHAPES) or {}).items():
        current, trained = shapes.get(name), VectorShape.from_state(state)
        if current is None or current.same_as(trained) or current.mean.shape != trained.mean.shape:
            continue
        text.reshape(name, current, trained)
        shapes[name] = trained
        log.info("%s: item text vectors centred as when the checkpoint trained (the data's centre has moved)", name)


def fit_checkpoint(
    tower: nn.Module, checkpoint: dict, path: str | Path, catalogues: Mapping[str, str], shapes: dict, device
) -> None:
    """Before a checkpoint (``--ckpt_path``, file ``path``) loads into a model whose item tower is ``tower``:
    ``fit_id_tables`` and ``fit_text_shapes``."""
    fit_id_tables(tower.id_embeddings, checkpoint, path, catalogues, device)
    fit_text_shapes(getattr(tower, "text", None), checkpoint, shapes)  # an ID model has none


def data_trained_on(catalogues: Mapping[str, str], shapes: Mapping[str, VectorShape]) -> dict:
    """What a checkpoint keeps of the data its model trained on: each ID domain's catalogue digest and each
    domain's text ``VectorShape`` (``fit_checkpoint`` and ``load_pretrained_weights`` + ``fit_text_shapes`` read
    them)."""
    return {CATALOGUES: dict(catalogues), TEXT_SHAPES: {name: shape.state() for name, shape in shapes.items()}}


def load_pretrained_weights(model: nn.Module, path: str | Path, catalogues: Mapping[str, str] | None = None) -> dict:
    """Copies the model weights of checkpoint ``path`` into ``model`` (not its optimizer or trainer state); returns
    the checkpoint.

    Raises:
        NoCheckpoint: no such file (a ``FileNotFoundError``).
        CheckpointError: not a whole checkpoint of a fit, it holds code (loaded weights-only), or its weights do not
            fit the model, naming the missing, unexpected and misshapen keys (a ``ValueError``).
    """
    if not Path(path).is_file():
        raise NoCheckpoint(f"model.pretrained: checkpoint {str(path)!r} does not exist")
    own = model.state_dict()
    device = next(iter(own.values())).device if own else "cpu"
    checkpoint = load_checkpoint(path, map_location=device)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(path, "holds no model weights (state_dict); expected a checkpoint of a fit")
    state = {k: v for k, v in state.items() if k in own or not k.startswith(OPTIONAL)}
    missing = [k for k in own if k not in state and not k.startswith(OPTIONAL)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    for key in shapes:
        if (name := _id_domain(key)) is not None:
            _check_id_rows(path, name, len(state[key]), len(own[key]))
    if missing or unexpected or shapes:
        raise CheckpointError(
            path,
            "does not fit this model (same mode, hidden_size, layers, inner_size, adaptor_experts and text model?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {shapes[:5]}",
        )
    check_catalogues(path, checkpoint.get(CATALOGUES), catalogues or {})
    model.load_state_dict(state, strict=False)
    return checkpoint
