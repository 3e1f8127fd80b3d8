"""``TransferRecommender``: the Lightning shell around item tower + sequence encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from rec_transfer.metrics import RankingMetrics, UserScores
from rec_transfer.models.components import ItemMode, ItemScorer, ItemTower, SequenceEncoder, Similarity
from rec_transfer.models.components.alignment import DomainDiscriminator
from rec_transfer.models.components.contrast import history_contrast
from rec_transfer.models.components.history import history_ends, last_histories
from rec_transfer.models.components.item_text import TrainableItemText
from rec_transfer.models.components.losses import next_item_loss
from rec_transfer.models.components.ranking import chunked_ranks, chunked_top_k
from rec_transfer.models.hparams import apply_optimizer_settings
from rec_transfer.models.optim import adamw_with_warmup, param_groups, recipe_target_lr_scale
from rec_transfer.models.pretrained import data_trained_on, fit_checkpoint, fit_text_shapes, load_pretrained_weights
from rec_transfer.models.text_source import item_text_source, items_to_train
from rec_transfer.phase import Phase
from rec_transfer.utils.distributed import step_share
from rec_transfer.utils.seeding import EpochSeed

LossName = Literal["full", "chunked", "sampled"]


class TransferRecommender(L.LightningModule):
    """Text-based sequential recommender over one or several domains.

    Every batch names its domain; the model scores all items of that domain. Domains (their item
    counts and text vectors) come from the data module in ``setup`` and are never duplicated in
    the config.

    Args:
        mode: ``text`` (adapted text vectors), ``text+id`` (plus an ID embedding per item), or
            ``id`` (ID embeddings only: the SASRec baseline).
        hidden_size: width of item vectors and of the transformer.
        layers: transformer layers.
        heads: attention heads.
        inner_size: width of the transformer's feed-forward layer (``None``: 4 × ``hidden_size``).
        dropout: dropout in the transformer and on its input.
        adaptor_experts: whitening experts in the text adaptor.
        adaptor_dropout: dropout on the text vectors inside the adaptor.
        max_len: longest history the model reads (must be >= the data's ``max_len``).
        similarity: ``dot`` product, or ``cosine`` of normalised vectors.
        temperature: logits are divided by it.
        history_bias: learn one logit offset for items already in the user's history (``HistoryBias``): how often
            the domain's users return to an item. Training, evaluation and prediction all score with it; the
            evaluation still ranks every item. ``false``: score the items alone.
        lr: learning rate (source phase, or the whole run without transfer).
        lr_scale: ``target_lr_scale`` for the source phase, or a run without transfer: submodules at ``lr`` times
            their factor (the target-only baseline gets its transfer's ``target_lr_scale`` here).
        target_lr: learning rate after the switch to the target domain (``None``: ``lr``); the default is half the
            default ``lr``: smaller steps on the target than on the sources.
        target_lr_scale: after the switch, these submodules train at ``target_lr`` times their factor, e.g.
            ``{"encoder": 0.1}``: the transferred sequence encoder adapts slowly while the text adaptor learns the
            target's items at full speed (between freezing it and training it like the rest). ``None``: the default
            recipe's, ``{"item_tower.adaptor": 2.0}`` (none for ``mode: id``); ``{}``: every part at ``target_lr``.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, restarted with each new optimizer.
        target_warmup_steps: the warm-up of the optimizer built at the switch (``None``: ``warmup_steps``).
        top_k: recommendations per user in ``predict``.
        exclude_history: ``predict`` never recommends an item already in the user's history (``false`` keeps them).
        cutoffs: the K of every metric @K (Recall, NDCG, HitRate, Precision, F1; see ``RankingMetrics``); 10 is
            always added, since NDCG@10 chooses checkpoints and stops training.
        loss: ``full`` softmax over every item of the domain; ``chunked``: the same, exact, computed in
            item chunks so memory stays bounded for large catalogues; ``sampled``: softmax over the batch's
            own targets plus ``num_negatives`` shared uniform negatives with log-q correction, whose cost
            follows the batch, not the catalogue (the item tower runs only over the items a batch needs).
        num_negatives: uniform negatives per batch for ``sampled``.
        item_chunk: items per block for the ``chunked`` loss, and for ranking in evaluation and prediction
            (which never build a users × items score matrix).
        eval_dtype: precision of the item table held during evaluation and prediction (``float16`` halves it
            for large catalogues; scores are always computed in float32).
        text_lr: learning rate of the language model's trainable top layers (``text_encoder.train_layers``);
            ``None``: the model's learning rate.
        text_items_per_step: at most this many of a batch's items are run through the trainable language
            model layers with gradients at each step (every value comes from a bank: ``TrainableItemText``).
        text_write_back: write those recomputed vectors to the bank after their step (else it holds the epoch's start).
        align_weight: weight of a domain-adversarial loss during the source phase (0: off): a discriminator
            learns to tell source item vectors from target item vectors, and the item tower, through a
            gradient reversal, learns to make them indistinguishable (``DomainDiscriminator``).
        align_items: items of each side drawn for that loss at each source step.
        contrast_weight: weight of a sequence-to-sequence contrastive loss on the source domains' batches (0: off):
            each history's state, and its state with a share ``contrast_mask`` of its items masked, should be
            nearer each other than the batch's other histories (``sequence_contrast``; UniSRec's pre-training).
        contrast_mask: the share of items masked in the second view.
        pretrained: a checkpoint of an earlier run (e.g. pre-trained on source domains) whose
            weights this model starts from; its optimizer and trainer state are not used (that
            is ``--ckpt_path``, which resumes). ID tables of domains the data does not serve are
            skipped; every other weight must match.
    """

    def __init__(
        self,
        mode: ItemMode = "text",
        hidden_size: int = 64,
        layers: int = 2,
        heads: int = 2,
        inner_size: int | None = None,
        dropout: float = 0.2,
        adaptor_experts: int = 8,
        adaptor_dropout: float = 0.2,
        max_len: int = 50,
        similarity: Similarity = "cosine",
        temperature: float = 0.07,
        history_bias: bool = True,
        lr: float = 1e-3,
        lr_scale: dict[str, float] | None = None,
        target_lr: float | None = 5e-4,
        target_lr_scale: dict[str, float] | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        target_warmup_steps: int | None = None,
        top_k: int = 10,
        exclude_history: bool = True,
        cutoffs: tuple[int, ...] = (10, 50),
        loss: LossName = "full",
        num_negatives: int = 1024,
        item_chunk: int = 8192,
        eval_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        text_lr: float | None = None,
        text_items_per_step: int = 256,
        text_write_back: bool = False,
        align_weight: float = 0.0,
        align_items: int = 256,
        contrast_weight: float = 0.0,
        contrast_mask: float = 0.2,
        pretrained: str | None = None,
    ):
        super().__init__()
        if not (0 <= contrast_mask < 1 and contrast_weight >= 0):
            raise ValueError(
                f"model.contrast_mask {contrast_mask}: a share in [0, 1); contrast_weight {contrast_weight}: >= 0"
            )
        self.save_hyperparameters()
        self.encoder = SequenceEncoder(hidden_size, layers, heads, dropout, max_len, inner_size)
        self.scorer = ItemScorer(similarity, temperature, history_bias)
        self.item_tower: ItemTower | None = None  # built in setup(): its text width comes from the data
        self.discriminator = DomainDiscriminator(hidden_size) if align_weight > 0 else None
        self.val_metrics = nn.ModuleDict()
        self.test_metrics = nn.ModuleDict()
        self.test_users = UserScores()  # the target's test, user by user: two fits compare on the same users
        self.test_user_scores: dict[str, torch.Tensor] | None = None  # set by each test of the target
        self.transfer_phase: Phase | None = None  # see on_transfer_phase; None: a run without transfer
        self.target_domain: str | None = None
        # Item tables built once per evaluation pass (see eval_tables); never saved, dropped by train()/eval().
        self._eval_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._catalogues: dict[str, str] = {}  # domain -> Domain.catalogue_digest, for the ID tables (add_domains)
        self._shapes: dict = {}  # domain -> VectorShape: how its frozen text vectors were centred (add_domains)

    # ------------------------------------------------------------------ domains
    def setup(self, stage: str) -> None:
        self.add_domains(self.trainer.datamodule)
        resuming = self.trainer.ckpt_path is not None  # the checkpoint brings its own weights
        if self.hparams.pretrained and not resuming and not getattr(self, "_pretrained_loaded", False):
            self.load_pretrained(self.hparams.pretrained)  # to fine-tune, or to test, validate or predict with

    def add_domains(self, dm) -> None:
        """Registers every domain of the data module ``dm`` (set up) and which one is the target."""
        self.target_domain = getattr(dm, "target_name", None)
        for name, d in dm.domains.items():
            self.add_domain(name, d.num_items, d.item_text, d.item_popularity, d.centred_items)
            if self.hparams.mode != "text":  # an ID table serves the items it was trained on: kept with it
                self._catalogues[name] = d.domain.catalogue_digest()
            if getattr(d, "vector_shape", None) is not None:  # and text vectors are seen as they were centred
                self._shapes[name] = d.vector_shape

    def load_pretrained(self, path: str) -> None:
        """Copies the model weights of checkpoint ``path`` (not its optimizer or trainer state)."""
        checkpoint = load_pretrained_weights(self, path, self._catalogues)
        fit_text_shapes(getattr(self.item_tower, "text", None), checkpoint, self._shapes)
        self._pretrained_loaded = True

    def add_domain(self, name: str, num_items: int, text=None, popularity=None, centred_items=None) -> None:
        """Registers a domain: its item table and metrics. ``text`` is (num_items + 1, D) vectors or token states
        (row 0: padding item); the first domain's sizes the shared adaptor, and the text source refuses later
        domains of another width. ``popularity`` (num_items + 1,): each item's share of the training targets
        (for the sampled loss; uniform if not given). ``centred_items``: see ``TrainableItemText.add_domain``."""
        if text is None and self.hparams.mode != "id":
            raise ValueError(
                f"model.mode {self.hparams.mode!r} reads item texts, but domain {name!r} has none "
                "(text_encoder: null): drop that line (MiniLM is the default) or use mode: id"
            )
        if self.item_tower is None:
            self.item_tower = ItemTower(
                self.hparams.hidden_size,
                self.hparams.mode,
                item_text_source(text, self._trainer, self.hparams),  # the trainer only for a trained top
                self.hparams.adaptor_experts,
                self.hparams.adaptor_dropout,
            ).to(self.device)
        self.item_tower.add_domain(name, num_items, None if text is None else text.to(self.device), centred_items)
        if name in self.item_tower.id_embeddings:
            self.item_tower.id_embeddings[name].to(self.device)
        if popularity is None:
            popularity = torch.full((num_items + 1,), 1.0 / max(num_items, 1)).index_fill_(0, torch.tensor([0]), 0)
        self.register_buffer(f"popularity_{name}", popularity.to(self.device), persistent=False)
        for metrics in (self.val_metrics, self.test_metrics):
            if name not in metrics:
                metrics[name] = RankingMetrics(self.hparams.cutoffs).to(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.prepare_for(checkpoint, self.trainer.ckpt_path)

    def prepare_for(self, checkpoint: dict, path: str | Path) -> None:
        """Before ``checkpoint`` (file ``path``) loads into a model with its domains: ``fit_checkpoint``."""
        if self.item_tower is not None:
            fit_checkpoint(self.item_tower, checkpoint, path, self._catalogues, self._shapes, self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.update(data_trained_on(self._catalogues, self._shapes))

    # ------------------------------------------------------------------ maths
    def eval_tables(self, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N + 1, D) item vectors as the sequence encoder reads them, and as scoring reads them (``scorer.keys``,
        in ``eval_dtype``). For evaluation only.

        The weights cannot change during an evaluation pass, so both are built once and reused by every batch of
        the pass: rebuilding the text adaptor's output over the whole catalogue for every batch would be a large
        share of the pass. ``train()``/``eval()`` drop them (Lightning calls ``eval()`` as every validation, test
        and predict loop starts, after any checkpoint is loaded), so weights changed by training or loading are
        never scored with a stale table.
        """
        if domain not in self._eval_tables:
            with torch.no_grad():
                table = self.item_tower(domain)
                keys = self.scorer.keys(table).to(getattr(torch, self.hparams.eval_dtype))
            self._eval_tables[domain] = (table, keys)
        return self._eval_tables[domain]

    def train(self, mode: bool = True):
        self._eval_tables = {}
        return super().train(mode)

    def encode(self, batch: dict, table: torch.Tensor) -> torch.Tensor:
        """States at every token of the batch's rows: (R, L, D); rows may be packed (see ``collate``)."""
        return self.encoder(table[batch["input"]], batch.get("positions"), batch.get("segments"))

    def last_states(self, batch: dict, table: torch.Tensor) -> torch.Tensor:
        # Packed evaluation rows: the collate function says where each user's history ends.
        ends = batch["last"] if "last" in batch else history_ends(batch["input"], batch.get("segments"))
        return self.encode(batch, table).flatten(0, 1)[ends]  # (B, D)

    def forward(self, batch: dict) -> torch.Tensor:
        """Scores of every item of the batch's domain for each user's next item: (B, N + 1), padding at -inf.

        Holds a users × items matrix: for small catalogues and inspection. Evaluation and prediction rank in
        item chunks instead (``ranks``, ``recommend``).
        """
        table = self.item_tower(batch["domain"])
        return self.scorer(self.last_states(batch, table), table, self._last_histories(batch))

    def _last_histories(self, batch: dict) -> torch.Tensor | None:
        """(B, L) each user's history as the model reads it, for ``history_bias`` (``None`` without it)."""
        if self.scorer.history_bias is None:
            return None
        return last_histories(batch["input"], batch.get("segments"), batch.get("last"))

    def _eval_queries(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) float32 queries of the batch's users and the (N + 1, D) keys they are scored against."""
        table, keys = self.eval_tables(batch["domain"])
        with torch.autocast(self.device.type, enabled=False):
            return self.scorer.queries(self.last_states(batch, table)), keys

    def ranks(self, batch: dict) -> torch.Tensor:
        """(B,) 1-based rank of each user's target among all items of the domain, ties counted against it."""
        queries, keys = self._eval_queries(batch)
        offset = self.scorer.history_offset()
        return chunked_ranks(
            queries, keys, batch["target"], self.hparams.item_chunk, self._last_histories(batch), offset
        )

    def recommend(self, batch: dict, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k) scores and item ids of the best items, without the user's history if ``exclude_history``."""
        queries, keys = self._eval_queries(batch)
        exclude = batch.get("history") if self.hparams.exclude_history else None
        histories, offset = self._last_histories(batch), self.scorer.history_offset()
        return chunked_top_k(queries, keys, k, self.hparams.item_chunk, exclude, histories, offset)

    @property
    def _trainable_text(self) -> TrainableItemText | None:
        text = getattr(self.item_tower, "text", None)
        return text if isinstance(text, TrainableItemText) else None

    def loss(self, batch: dict) -> torch.Tensor:
        """Next-item cross-entropy at every real position at once (``loss`` chooses full, chunked or sampled)."""
        hp, popularity = self.hparams, getattr(self, f"popularity_{batch['domain']}")
        train_items = None if self._trainable_text is None else items_to_train(batch, hp.text_items_per_step)
        towers = (self.encoder, self.item_tower, self.scorer)
        return next_item_loss(*towers, batch, hp.loss, hp.item_chunk, popularity, hp.num_negatives, train_items)

    def alignment_loss(self, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Domain-adversarial loss and discriminator accuracy on random items of ``source`` and of the target."""
        vectors = []
        for domain in (source, self.target_domain):
            count = self.item_tower.num_items[domain]
            items = torch.randint(1, count + 1, (self.hparams.align_items,), device=self.device)
            vectors.append(self.item_tower(domain, items))
        return self.discriminator(*vectors)

    def contrast_loss(self, batch: dict) -> torch.Tensor:
        """The batch's sequence-to-sequence contrastive loss (``contrast_weight``; ``history_contrast``)."""
        mask, temperature = self.hparams.contrast_mask, self.hparams.temperature
        return history_contrast(self.encoder, self.item_tower, batch, mask, temperature)

    # ------------------------------------------------------------------ Lightning hooks
    def configure_callbacks(self) -> list[Callback]:
        # Every trainer of this model reseeds per epoch (exact resume of dropout masks), however it was built.
        return [EpochSeed()]

    def on_train_epoch_start(self) -> None:
        if self._trainable_text is not None:
            self._trainable_text.new_epoch()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        rec_loss = self.loss(batch)
        size = len(batch["user"])
        self.log("train/loss", rec_loss, prog_bar=True, batch_size=size)
        self.log(f"train/{batch['domain']}/loss", rec_loss, batch_size=size, add_dataloader_idx=False)
        rec_loss = rec_loss * step_share((batch["target"] > 0).sum())  # DDP: the gradient of one process (see there)
        domain, target = batch["domain"], self.target_domain
        if self.hparams.contrast_weight > 0 and target is not None and domain != target:
            contrast = self.contrast_loss(batch)  # in-batch negatives: each DDP rank's own histories
            self.log("train/contrast_loss", contrast, batch_size=size)
            rec_loss = rec_loss + self.hparams.contrast_weight * contrast
        if self.discriminator is None or domain == target or target not in self.item_tower.num_items:
            return rec_loss
        align, accuracy = self.alignment_loss(domain)
        self.log_dict({"train/align_loss": align, "train/align_accuracy": accuracy}, batch_size=size)
        return rec_loss + self.hparams.align_weight * align

    def _eval_domains(self, loaders) -> list[str]:
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        return [dl.dataset.domain for dl in loaders]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_metrics[batch["domain"]].update_ranks(self.ranks(batch))

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics, self._eval_domains(self.trainer.val_dataloaders))

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        rank = self.ranks(batch)
        self.test_metrics[batch["domain"]].update_ranks(rank)
        if batch["domain"] == self.target_domain:
            self.test_users.update(batch["user"], rank)

    def on_test_epoch_end(self) -> None:
        domains = self._eval_domains(self.trainer.test_dataloaders)
        self._log_metrics("test", self.test_metrics, domains)
        if self.target_domain in domains:  # the same on every rank: compute() gathers the users of all of them
            self.test_user_scores = {k: v.cpu().reshape(-1) for k, v in self.test_users.compute().items()}
        self.test_users.reset()

    def _log_metrics(self, split: str, metrics: nn.ModuleDict, domains: list[str]) -> None:
        for name in domains:  # the same list on every rank: compute() syncs across ranks
            values = metrics[name].compute()
            # compute() already synced them: sync_dist only tells Lightning so (the same numbers on every rank).
            self.log_dict({f"{split}/{name}/{k}": v for k, v in values.items()}, sync_dist=True)
            if name == self.target_domain:
                self.log(f"hp/{split}_ndcg@10", values["ndcg@10"], sync_dist=True)
            metrics[name].reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        scores, items = self.recommend(batch, self.hparams.top_k)  # (B, K)
        return {"domain": batch["domain"], "user": batch["user"], "items": items, "scores": scores}

    def on_transfer_phase(self, phase: Phase) -> None:
        """Called by the transfer schedule (``DomainTransfer``) at the switch and on restoring a checkpoint, before
        optimizers are built: the target phase trains with ``target_lr`` (and ``target_lr_scale``)."""
        self.transfer_phase = phase

    def _param_groups(self) -> list[dict]:
        """The optimizer's parameter groups, each with its learning rate, as the phase and hyperparameters say."""
        target = self.transfer_phase == "target"
        lr = self.hparams.target_lr if target and self.hparams.target_lr else self.hparams.lr
        scales = self.hparams.target_lr_scale if target else self.hparams.lr_scale
        if target and scales is None:
            scales = recipe_target_lr_scale(self.hparams.mode)
        return param_groups(self, lr, self._trainable_text, self.hparams.text_lr, scales)

    def configure_optimizers(self):
        target = self.transfer_phase == "target" and self.hparams.target_warmup_steps is not None
        warmup = self.hparams.target_warmup_steps if target else self.hparams.warmup_steps
        return adamw_with_warmup(self._param_groups(), self.hparams.weight_decay, warmup)

    def on_train_start(self) -> None:
        # A resumed optimizer holds the checkpoint's learning rates and weight decay: a resume that changes them
        # (models/hparams.py, TRAINING) applies the new ones; unchanged ones come out as the same floats.
        if self.trainer.ckpt_path is not None and len(self.trainer.optimizers) == 1:
            configs = self.trainer.lr_scheduler_configs
            scheduler = configs[0].scheduler if len(configs) == 1 else None
            apply_optimizer_settings(self.trainer.optimizers[0], scheduler, self._param_groups(), self.hparams)
