"""One domain's text vectors brought to a shared shape: centred, and their covariance evened out (whitened)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def whitening(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (D,) mean and (D, D) matrix with which ``(vectors - mean) @ matrix`` are whitened vectors.

    Ridge-regularised ZCA whitening, written here because it is ten lines: each principal direction of the
    covariance with variance ``v`` is scaled by ``1 / sqrt(v + r)``, ``r`` the mean variance, so the strong directions
    end with about the same variance and the weak ones (noise, or none: a sentence model's vectors do not fill
    every dimension) are not blown up; then every direction by one factor, so the total variance is the vectors'
    own. Done per domain, every domain's vectors share a centre and roughly one covariance (the alignment of
    CORAL, without a learned part); ZCA keeps them as near their own axes as a whitening can.

    Args:
        vectors: (N, D) one domain's item vectors; fewer than 2 rows, or no variance: the matrix is the identity.
    """
    x = vectors.double()
    mean = x.mean(dim=0)
    dim = x.shape[1]
    if len(x) < 2:
        return mean.to(vectors.dtype), torch.eye(dim, dtype=vectors.dtype, device=vectors.device)
    x = x - mean
    variances, directions = torch.linalg.eigh(x.T @ x / (len(x) - 1))  # ascending, (D,) and (D, D)
    variances = variances.clamp(min=0)
    total = variances.sum()
    if total <= 0:
        return mean.to(vectors.dtype), torch.eye(dim, dtype=vectors.dtype, device=vectors.device)
    scale = (variances + total / dim).rsqrt()
    scale = scale * torch.sqrt(total / (variances * scale**2).sum())  # keep the total variance
    matrix = directions @ torch.diag(scale) @ directions.T
    return mean.to(vectors.dtype), matrix.to(vectors.dtype)


def whitened(vectors: torch.Tensor, fit_rows: int | None = None) -> torch.Tensor:
    """``vectors`` centred and whitened by the :func:`whitening` of their first ``fit_rows`` rows (default all)."""
    return VectorShape.fit(vectors[:fit_rows], whiten=True).apply(vectors)


@dataclass(frozen=True)
class VectorShape:
    """How one domain's raw text vectors were brought to the shared shape: minus ``mean``, then times ``matrix``
    (its whitening; None: centred only). A model trained on vectors of one shape must see its items in that shape,
    even where the data's own centre has moved since (new interactions): checkpoints keep it (``state``)."""

    mean: torch.Tensor
    matrix: torch.Tensor | None = None

    @classmethod
    def fit(cls, vectors: torch.Tensor, whiten: bool = False) -> VectorShape:
        """The centre (and, if ``whiten``, the whitening) of ``vectors`` (N, D)."""
        if whiten:
            return cls(*whitening(vectors))
        return cls(vectors.mean(dim=0) if len(vectors) else vectors.new_zeros(vectors.shape[1]))

    def apply(self, raw: torch.Tensor) -> torch.Tensor:
        shaped = raw - self.mean.to(raw)
        return shaped if self.matrix is None else shaped @ self.matrix.to(raw)

    def undo(self, shaped: torch.Tensor) -> torch.Tensor:
        """The raw vectors that ``apply`` brought to ``shaped``."""
        if self.matrix is not None:  # a ridge-regularised ZCA matrix: symmetric and well conditioned
            shaped = torch.linalg.solve(self.matrix.to(shaped).double(), shaped.double().T).T.to(shaped.dtype)
        return shaped + self.mean.to(shaped)

    def same_as(self, other: VectorShape) -> bool:
        def close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
            if a is None or b is None:
                return a is b
            return a.shape == b.shape and torch.allclose(a.cpu().float(), b.cpu().float(), rtol=0, atol=1e-6)

        return close(self.mean, other.mean) and close(self.matrix, other.matrix)

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu()} | ({} if self.matrix is None else {"matrix": self.matrix.cpu()})

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> VectorShape:
        return cls(state["mean"], state.get("matrix"))
