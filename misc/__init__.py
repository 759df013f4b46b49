"""Shared helpers used by every stage: device choice, seeding, logging, progress bars,
atomic file writes, checkpoints and distributed training. Each need has exactly one helper here."""
