"""``TransferRecommender``: the Lightning shell around item tower + sequence encoder."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from rec_transfer.metrics import RankingMetrics
from rec_transfer.models.components import ItemMode, ItemScorer, ItemTower, SequenceEncoder, Similarity
from rec_transfer.phase import Phase
from rec_transfer.utils.seeding import EpochSeed


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
        lr: learning rate (source phase, or the whole run without transfer).
        target_lr: learning rate after the switch to the target domain (``None``: ``lr``).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, restarted with each new optimizer.
        top_k: recommendations per user in ``predict``.
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
        lr: float = 1e-3,
        target_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        top_k: int = 10,
        pretrained: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = SequenceEncoder(hidden_size, layers, heads, dropout, max_len, inner_size)
        self.scorer = ItemScorer(similarity, temperature)
        self.item_tower: ItemTower | None = None  # built in setup(): its text width comes from the data
        self.val_metrics = nn.ModuleDict()
        self.test_metrics = nn.ModuleDict()
        self.transfer_phase: Phase | None = None  # see on_transfer_phase; None: a run without transfer
        self.target_domain: str | None = None
        # Item tables built once per evaluation pass (see item_table); never saved, dropped by train()/eval().
        self._eval_tables: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ domains
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        self.target_domain = getattr(dm, "target_name", None)
        for name, d in dm.domains.items():
            self.add_domain(name, d.num_items, d.item_vectors)
        resuming = self.trainer.ckpt_path is not None  # the checkpoint brings its own weights
        if (
            self.hparams.pretrained
            and stage == "fit"
            and not resuming
            and not getattr(self, "_pretrained_loaded", False)
        ):
            self.load_pretrained(self.hparams.pretrained)

    def load_pretrained(self, path: str) -> None:
        """Copies the model weights of checkpoint ``path`` (not its optimizer or trainer state)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist")
        state = torch.load(path, map_location=self.device, weights_only=False)["state_dict"]
        own = self.state_dict()
        # ID tables of domains this run does not serve (the sources') are not needed; nor metric states.
        optional = ("item_tower.id_embeddings.", "val_metrics.", "test_metrics.")
        state = {k: v for k, v in state.items() if k in own or not k.startswith(optional)}
        missing = [k for k in own if k not in state and not k.startswith(optional)]
        unexpected = [k for k in state if k not in own]
        shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(
                f"pretrained checkpoint {path!r} does not fit this model (same mode, hidden_size, layers, "
                f"inner_size, adaptor_experts and text model?): missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"shape mismatch {shapes[:5]}"
            )
        self.load_state_dict(state, strict=False)
        self._pretrained_loaded = True

    def add_domain(self, name: str, num_items: int, text_vectors: torch.Tensor | None) -> None:
        """Registers a domain: its item table and metrics. The first domain's text width sizes the shared adaptor;
        ``ItemTower.add_domain`` refuses later domains of another width."""
        if self.item_tower is None:
            text_dim = None if text_vectors is None else text_vectors.shape[1]
            self.item_tower = ItemTower(
                self.hparams.hidden_size,
                self.hparams.mode,
                text_dim,
                self.hparams.adaptor_experts,
                self.hparams.adaptor_dropout,
            )
        vectors = None if text_vectors is None else text_vectors.to(self.device)
        self.item_tower.add_domain(name, num_items, vectors)
        if name in self.item_tower.id_embeddings:
            self.item_tower.id_embeddings[name].to(self.device)
        for metrics in (self.val_metrics, self.test_metrics):
            if name not in metrics:
                metrics[name] = RankingMetrics().to(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint may hold ID tables of domains the current data module does not serve
        # (e.g. predicting on the target after transfer): create them so the weights load.
        prefix = "item_tower.id_embeddings."
        for key, value in checkpoint["state_dict"].items():
            if key.startswith(prefix) and self.item_tower is not None:
                name = key[len(prefix) :].rsplit(".", 1)[0]
                if name not in self.item_tower.id_embeddings:
                    self.item_tower.id_embeddings[name] = nn.Embedding(*value.shape, padding_idx=0).to(self.device)

    # ------------------------------------------------------------------ maths
    def item_table(self, domain: str) -> torch.Tensor:
        """(N + 1, D) item vectors of ``domain``.

        In evaluation (eval mode, no gradients) the weights cannot change between batches, so the table
        is built once and reused by every batch of the pass: rebuilding the text adaptor's output over the
        whole catalogue for every batch would be a large share of the pass. ``train()``/``eval()`` drop it (Lightning
        calls ``eval()`` as every validation, test and predict loop starts, after any checkpoint is loaded),
        so weights changed by training or loading are never scored with a stale table.
        """
        if self.training or torch.is_grad_enabled():
            return self.item_tower(domain)
        if domain not in self._eval_tables:
            self._eval_tables[domain] = self.item_tower(domain)
        return self._eval_tables[domain]

    def train(self, mode: bool = True):
        self._eval_tables = {}
        return super().train(mode)

    def encode(self, batch: dict, table: torch.Tensor) -> torch.Tensor:
        """States at every token of the batch's rows: (R, L, D); rows may be packed (see ``collate``)."""
        return self.encoder(table[batch["input"]], batch.get("positions"), batch.get("segments"))

    def last_states(self, batch: dict, table: torch.Tensor) -> torch.Tensor:
        states = self.encode(batch, table)
        if "last" in batch:  # packed rows: the collate function says where each user's history ends
            return states.flatten(0, 1)[batch["last"]]  # (B, D)
        last = (batch["input"] > 0).sum(dim=1).clamp(min=1) - 1  # (B,) right padding
        return states[torch.arange(len(last), device=states.device), last]  # (B, D)

    def forward(self, batch: dict) -> torch.Tensor:
        """Scores of every item of the batch's domain for each user's next item: (B, N + 1)."""
        table = self.item_table(batch["domain"])
        return self.scorer(self.last_states(batch, table), table)

    def loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy over all items of the domain, at every real position at once."""
        table = self.item_table(batch["domain"])
        return self.scorer.loss(self.encode(batch, table), batch["target"], table)

    # ------------------------------------------------------------------ Lightning hooks
    def configure_callbacks(self) -> list[Callback]:
        # Every trainer of this model reseeds per epoch (exact resume of dropout masks), however it was built.
        return [EpochSeed()]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["user"]))
        self.log(f"train/{batch['domain']}/loss", loss, batch_size=len(batch["user"]), add_dataloader_idx=False)
        return loss

    def _eval_domains(self, loaders) -> list[str]:
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        return [dl.dataset.domain for dl in loaders]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_metrics[batch["domain"]].update(self(batch), batch["target"])

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics, self._eval_domains(self.trainer.val_dataloaders))

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_metrics[batch["domain"]].update(self(batch), batch["target"])

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics, self._eval_domains(self.trainer.test_dataloaders))

    def _log_metrics(self, split: str, metrics: nn.ModuleDict, domains: list[str]) -> None:
        for name in domains:  # the same list on every rank: compute() syncs across ranks
            values = metrics[name].compute()
            self.log_dict({f"{split}/{name}/{k}": v for k, v in values.items()})
            if name == self.target_domain:
                self.log(f"hp/{split}_ndcg@10", values["ndcg@10"])
            metrics[name].reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        scores, items = self(batch).topk(self.hparams.top_k, dim=1)  # (B, K)
        return {"domain": batch["domain"], "user": batch["user"], "items": items, "scores": scores}

    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams(self.hparams, {"hp/val_ndcg@10": 0.0, "hp/test_ndcg@10": 0.0})

    def on_transfer_phase(self, phase: Phase) -> None:
        """Called by the transfer schedule (``DomainTransfer``) at the switch and on restoring a checkpoint, before
        optimizers are built: the target phase trains with ``target_lr``."""
        self.transfer_phase = phase

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        target = self.transfer_phase == "target"
        lr = self.hparams.target_lr if target and self.hparams.target_lr else self.hparams.lr
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.hparams.weight_decay)
        warmup = max(1, self.hparams.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
