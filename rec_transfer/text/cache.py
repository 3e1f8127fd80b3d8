"""Disk cache of item text vectors, keyed by everything that determines them.

A file ``<cache_dir>/text_vectors/<key>.safetensors`` holds one float32 tensor ``vectors`` (N, D) and metadata
describing how it was made plus a sha256 of the tensor bytes. A cache hit reads and validates that file only: the
language model is neither loaded nor imported. Anything unexpected in the file (parse error, truncation, wrong shape,
metadata or checksum mismatch) logs a warning and the vectors are rebuilt. Files are written to a temp file in the
same folder and renamed into place, so readers never see a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import save_file

from rec_transfer.text.encode import collective_device, encode_texts_sharded
from rec_transfer.text.models import load_text_model, resolve_default_pooling, resolve_model
from rec_transfer.text.pooling import POOLING_METHODS, PoolingMethod

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = "1"
_TENSOR_NAME = "vectors"
TEMPLATE_FIELD = "{text}"


@dataclass(frozen=True)
class TextEncoderConfig:
    """How item texts become vectors; field names match :func:`cached_item_vectors` keywords, but for ``center``.

    Attributes:
        model_name: ``"minilm"``, ``"smollm2"``, a local model path or a hub id.
        pooling: ``"mean"``, ``"cls"``, ``"last"``, or None for the model's default (mean for encoders, last token
            for decoders).
        max_length: Truncation length in tokens.
        normalize: L2-normalise the vectors.
        batch_size: Texts per forward pass (does not change the vectors, so not part of the cache key).
        trust_remote_code: Allow custom model code from the hub.
        center: Subtract the mean vector of the catalogue (one domain's items) after loading; cheap, so not cached.
            Decoder LLM states share one large direction (SmolLM2: mean cosine 0.80-0.89 between items, MiniLM:
            0.23-0.36) that drowns the differences between items until the adaptor has learnt it away.
        train_layers: Fine-tune the language model's top ``train_layers`` layers inside the recommender (0: the
            model stays frozen and its vectors are cached). The lower layers' token states are cached instead.
    """

    model_name: str = "minilm"
    pooling: PoolingMethod | None = None
    max_length: int = 128
    normalize: bool = False
    batch_size: int = 64
    trust_remote_code: bool = False
    center: bool = False
    train_layers: int = 0

    @property
    def model_key(self) -> tuple:
        """What decides the trainable top layers: domains of one model must agree on it."""
        return (self.model_name, self.pooling, self.max_length, self.train_layers, self.center)

    def item_token_states(self, texts: Sequence[str], cache_dir: str | Path = ".cache/rec_transfer", progress=True):
        """Token states below the top ``train_layers`` layers (see ``rec_transfer.text.trainable``), cached."""
        from rec_transfer.text.token_cache import cached_token_states

        return cached_token_states(
            texts,
            self.model_name,
            self.train_layers,
            max_length=self.max_length,
            batch_size=self.batch_size,
            cache_dir=cache_dir,
            trust_remote_code=self.trust_remote_code,
            progress=progress,
        )

    def text_top(self, check_texts: Sequence[str] = (), cache_dir: str | Path = ".cache/rec_transfer"):
        """The trainable top layers (``TextTop``), checked against the full model on ``check_texts``."""
        from rec_transfer.text.token_cache import build_text_top

        return build_text_top(
            self.model_name,
            self.train_layers,
            self.pooling,
            check_texts,
            self.max_length,
            cache_dir,
            self.trust_remote_code,
        )

    def item_vectors(
        self,
        texts: Sequence[str],
        template: str = "",
        cache_dir: str | Path = ".cache/rec_transfer",
        progress: bool = True,
    ) -> torch.Tensor:
        """``cached_item_vectors(texts, **asdict(self), template=..., cache_dir=...)``, centred if ``center``."""
        options = asdict(self)
        center = options.pop("center")
        options.pop("train_layers")
        vectors = cached_item_vectors(texts, **options, template=template, cache_dir=cache_dir, progress=progress)
        if center:
            return vectors - vectors.mean(dim=0, keepdim=True)
        similarity = mean_cosine(vectors)
        if similarity > ANISOTROPY_WARNING:
            log.warning(
                "Text vectors of %s share one direction (mean cosine %.2f between items); they train slowly "
                "unless centred: set text_encoder.center: true",
                self.model_name,
                similarity,
            )
        return vectors


ANISOTROPY_WARNING = 0.7  # mean cosine between items that calls for `center` (MiniLM 0.23-0.36, SmolLM2 0.80-0.89)


def mean_cosine(vectors: torch.Tensor, sample: int = 2000) -> float:
    """Mean cosine similarity between distinct rows, over the first ``sample`` rows; 0 for fewer than 2."""
    rows = torch.nn.functional.normalize(vectors[:sample].float(), dim=-1)  # (K, D)
    k = len(rows)
    if k < 2:
        return 0.0
    total = rows.sum(dim=0)  # sum over pairs i != j of cos(i, j) = |sum|^2 - K
    return float((total @ total - k) / (k * (k - 1)))


class _TemplatedView(Sequence[str]):
    """Applies the template lazily, so a large catalogue is not duplicated in memory."""

    def __init__(self, texts: Sequence[str], template: str) -> None:
        self._texts = texts
        self._template = template

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._template.replace(TEMPLATE_FIELD, t) for t in self._texts[i]]
        return self._template.replace(TEMPLATE_FIELD, self._texts[i])


def _check_template(template: str) -> None:
    if template and TEMPLATE_FIELD not in template:
        raise ValueError(f"template must contain {TEMPLATE_FIELD!r} where the item text goes, got {template!r}")


def text_cache_key(
    texts: Sequence[str],
    *,
    identity: str,
    pooling: PoolingMethod,
    max_length: int,
    normalize: bool,
    template: str = "",
) -> str:
    """Cache key of a set of item vectors.

    Args:
        texts: Raw item texts (before the template), hashed in a streaming pass, each with its byte length so that
            ``["ab", "c"]`` and ``["a", "bc"]`` differ.
        identity: Model identity from :func:`model_identity` / :func:`load_text_model`.
        pooling: Resolved pooling method (not None).
        max_length: Truncation length.
        normalize: Whether vectors are L2-normalised.
        template: Template applied to each text (``"{text}"`` placeholder), or ``""``.

    Returns:
        Hex sha256.
    """
    header = json.dumps(
        {
            "version": CACHE_FORMAT_VERSION,
            "identity": identity,
            "pooling": pooling,
            "max_length": int(max_length),
            "normalize": bool(normalize),
            "template": template,
        },
        sort_keys=True,
    ).encode()
    digest = hashlib.sha256()
    digest.update(len(header).to_bytes(8, "little"))
    digest.update(header)
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    digest.update(len(texts).to_bytes(8, "little"))
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """File that holds the vectors of ``key``."""
    return Path(cache_dir) / "text_vectors" / f"{key}.safetensors"


def _tensor_checksum(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy()).hexdigest()


def _load_vectors(path: Path, expected: dict[str, str]) -> torch.Tensor | None:
    """Return the cached tensor, or None when missing or invalid (never raises on a bad file)."""
    if not path.exists():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensor = f.get_tensor(_TENSOR_NAME)
    except Exception as err:  # safetensors raises its own error type, OSError or ValueError on bad files
        log.warning("Text vector cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    problems = [k for k, v in expected.items() if metadata.get(k) != v]
    if tensor.dtype != torch.float32 or tensor.ndim != 2:
        problems.append(f"tensor {tuple(tensor.shape)} {tensor.dtype}")
    else:
        if tensor.shape[0] != int(expected["count"]):
            problems.append("row count")
        if metadata.get("dim") != str(tensor.shape[1]):
            problems.append("dim")
        if metadata.get("checksum") != _tensor_checksum(tensor):
            problems.append("checksum")
    if problems:
        log.warning("Text vector cache %s does not match (%s); rebuilding it", path, ", ".join(problems))
        return None
    return tensor


def _save_vectors(path: Path, tensor: torch.Tensor, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = tensor.contiguous()
    metadata = {**metadata, "dim": str(tensor.shape[1]), "checksum": _tensor_checksum(tensor)}
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file({_TENSOR_NAME: tensor}, tmp, metadata=metadata)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_ranks_hit(hit: bool) -> bool:
    flag = torch.tensor([int(hit)], device=collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _encoding_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cached_item_vectors(
    texts: Sequence[str],
    model_name: str = "minilm",
    pooling: PoolingMethod | None = None,
    max_length: int = 128,
    normalize: bool = False,
    template: str = "",
    batch_size: int = 64,
    cache_dir: str | Path = ".cache/rec_transfer",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Item text vectors, from the disk cache when possible, else encoded and cached.

    Under ``torch.distributed`` every rank must call this with the same arguments (so from Lightning's ``setup``,
    not the rank-0-only ``prepare_data``): all ranks encode their shard, rank 0 writes the file, and every rank
    returns the full tensor. Outside ``torch.distributed``, processes that miss the same file at once encode it
    once: the first holds a lock (``<cache_dir>/locks/<key>.lock``) while it encodes; the others wait, then read
    its file.

    Args:
        texts: One text per item, in item order.
        model_name: ``"minilm"``, ``"smollm2"``, a local model path or a hub id.
        pooling: ``"mean"``, ``"cls"``, ``"last"``, or None for the model's default.
        max_length: Truncation length in tokens.
        normalize: L2-normalise the vectors.
        template: Applied to every text before encoding; ``"{text}"`` marks where the text goes
            (e.g. ``"This product: {text}"``). ``""`` uses texts as they are.
        batch_size: Texts per forward pass.
        cache_dir: Cache root; vectors go to ``<cache_dir>/text_vectors/``, converted GGUF models to
            ``<cache_dir>/models/``.
        trust_remote_code: Allow custom model code from the hub.
        progress: Show a progress bar while encoding.

    Returns:
        float32 CPU tensor of shape (N, D), row i for ``texts[i]``.
    """
    _check_template(template)
    if pooling is not None and pooling not in POOLING_METHODS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLING_METHODS}")
    resolved = resolve_model(model_name)
    pooling = pooling or resolve_default_pooling(resolved)
    key = text_cache_key(
        texts,
        identity=resolved.identity,
        pooling=pooling,
        max_length=max_length,
        normalize=normalize,
        template=template,
    )
    path = cache_path(cache_dir, key)
    expected = {
        "format_version": CACHE_FORMAT_VERSION,
        "key": key,
        "model_name": model_name,
        "identity": resolved.identity,
        "pooling": pooling,
        "max_length": str(max_length),
        "normalize": str(bool(normalize)),
        "template": template,
        "count": str(len(texts)),
    }
    distributed = _distributed()
    vectors = _load_vectors(path, expected)
    hit = vectors is not None
    if distributed:
        # Collectives below must be entered by every rank, so all agree on hit/miss first.
        hit = _all_ranks_hit(hit)
    if hit:
        log.info("Loaded %d cached text vectors from %s", len(texts), path)
        return vectors

    with contextlib.ExitStack() as stack:
        if not distributed:  # ranks of one job already coordinate through collectives
            stack.enter_context(_encoding_lock(Path(cache_dir) / "locks" / f"{key}.lock", len(texts)))
            vectors = _load_vectors(path, expected)
            if vectors is not None:
                log.info("Loaded %d text vectors from %s, encoded meanwhile by another process", len(texts), path)
                return vectors
        rank = dist.get_rank() if distributed else 0
        # Rank 0 first: a GGUF model is converted once, then the other ranks load the converted folder.
        if rank == 0:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
        if distributed:
            dist.barrier()
        if rank != 0:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
        model.to(_encoding_device())
        vectors = encode_texts_sharded(
            _TemplatedView(texts, template) if template else texts,
            model,
            tokenizer,
            pooling=pooling,
            max_length=max_length,
            batch_size=batch_size,
            normalize=normalize,
            progress=progress,
        )
        if rank == 0:
            _save_vectors(path, vectors, expected)
            log.info("Cached %d text vectors in %s", len(texts), path)
        if distributed:
            dist.barrier()
        return vectors


@contextlib.contextmanager
def _encoding_lock(lock_path: Path, count: int) -> Iterator[None]:
    """Held while one process encodes a catalogue, so that others started alongside wait and read its file instead.

    An OS lock (flock): a process that dies holding it releases it, so no stale lock can block later runs.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)  # beside, not among, the vector files
    lock = FileLock(lock_path)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.warning("Another process is encoding these %d texts (%s holds the lock); waiting", count, lock_path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
