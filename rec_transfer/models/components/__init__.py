"""Pure ``nn.Module`` building blocks: no Lightning inside."""

from rec_transfer.models.components.adaptor import MoEAdaptor, ParametricWhitening
from rec_transfer.models.components.item_tower import ItemMode, ItemTower
from rec_transfer.models.components.scoring import ItemScorer, Similarity
from rec_transfer.models.components.sequence_encoder import SequenceEncoder

__all__ = ["ItemMode", "ItemScorer", "ItemTower", "MoEAdaptor", "ParametricWhitening", "SequenceEncoder", "Similarity"]
