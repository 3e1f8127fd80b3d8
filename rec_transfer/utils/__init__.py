"""Small helpers any layer may import: atomic files, file fingerprints, the torch.distributed context."""
