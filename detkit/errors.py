"""The exception types a user can cause: every message names the file, key or value and what would be valid."""


class DetkitError(Exception):
    """Base class of every error caused by user input (config, data, paths, checkpoints)."""


class ConfigError(DetkitError, ValueError):
    """A configuration file, key, value or command-line override is invalid."""


class DataError(DetkitError):
    """A data set file (image, annotation, split list) is missing or cannot be read."""


class CheckpointError(DetkitError):
    """A checkpoint file is missing, corrupt, truncated or does not match the model."""


class TrainingError(DetkitError):
    """Training cannot go on (a NaN or infinite loss, a failed process): the message says where it stopped."""


class ExportError(DetkitError):
    """A model cannot be exported or served as asked (format, opset, a missing export dependency, an
    unreadable exported file, or exported outputs that differ from the eager model's)."""
