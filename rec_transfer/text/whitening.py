"""One domain's text vectors brought to a shared shape: centred, and their covariance evened out (whitened)."""

from __future__ import annotations

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
    mean, matrix = whitening(vectors[:fit_rows])
    return (vectors - mean) @ matrix
