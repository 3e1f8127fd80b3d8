"""Starting a model from the weights of an earlier run's checkpoint (not a resume)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rec_transfer.utils.checkpoints import CheckpointError, NoCheckpoint, load_checkpoint

# Weights a checkpoint may hold that a new run need not have, and that it may miss: ID tables of domains this run
# does not serve (the sources'), metric states, the source phase's domain discriminator, the history offset (a
# checkpoint without one leaves it at its start).
OPTIONAL = ("item_tower.id_embeddings.", "val_metrics.", "test_metrics.", "discriminator.", "scorer.history_bias.")


def id_table_mismatch(domain: str, trained: int, given: int) -> str:
    """Why a checkpoint's item ID table of ``domain`` cannot serve the data's catalogue."""
    return (
        f"its item IDs of {domain!r} were trained on {trained} items, the data has {given}: an ID model scores only "
        "the items it was trained on; model.mode text ranks new items by their text"
    )


def load_pretrained_weights(model: nn.Module, path: str | Path) -> None:
    """Copies the model weights of checkpoint ``path`` into ``model`` (not its optimizer or trainer state).

    Raises:
        NoCheckpoint: no such file (a ``FileNotFoundError``).
        CheckpointError: not a whole checkpoint of a fit, it holds code (loaded weights-only), or its weights do not
            fit the model, naming the missing, unexpected and misshapen keys (a ``ValueError``).
    """
    if not Path(path).is_file():
        raise NoCheckpoint(f"model.pretrained: checkpoint {str(path)!r} does not exist")
    own = model.state_dict()
    device = next(iter(own.values())).device if own else "cpu"
    state = load_checkpoint(path, map_location=device).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(path, "holds no model weights (state_dict); expected a checkpoint of a fit")
    state = {k: v for k, v in state.items() if k in own or not k.startswith(OPTIONAL)}
    missing = [k for k in own if k not in state and not k.startswith(OPTIONAL)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    for key in (k for k in shapes if k.startswith("item_tower.id_embeddings.")):
        name = key.removeprefix("item_tower.id_embeddings.").rsplit(".", 1)[0]
        raise CheckpointError(path, id_table_mismatch(name, len(state[key]) - 1, len(own[key]) - 1))
    if missing or unexpected or shapes:
        raise CheckpointError(
            path,
            "does not fit this model (same mode, hidden_size, layers, inner_size, adaptor_experts and text model?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {shapes[:5]}",
        )
    model.load_state_dict(state, strict=False)
