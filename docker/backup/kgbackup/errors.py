"""Errors the CLI reports as one clear line (no traceback) and a non-zero exit."""


class KgBackupError(Exception):
    """Base class for every expected failure: bad input, refused action, broken dump."""


class ConfigError(KgBackupError):
    """Missing or invalid configuration (flags, env vars, files)."""


class NotFoundError(KgBackupError):
    """The requested backup does not exist in the target."""


class CorruptDumpError(KgBackupError):
    """The dump failed its checksum, size, decompression or count check."""


class RefusedError(KgBackupError):
    """The action would destroy data and was not forced."""


class StoreError(KgBackupError):
    """The live store answered unexpectedly or could not be reached."""


class ChangedDuringDumpError(StoreError):
    """The store changed while it was dumped: the dump is not one point in time (retried, then refused)."""
