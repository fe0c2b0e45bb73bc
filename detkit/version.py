"""detkit's version: one place, read by setup.cfg, checkpoints and exported files (imports nothing)."""

__version__ = "0.1.0"
