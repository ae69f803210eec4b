"""User-facing errors. The CLI prints these as one line and exits with code 2; no traceback."""


class WorldsimError(Exception):
    """A mistake the user can fix (bad input, bad flag, bad file). Message says what to do."""


class ConfigError(WorldsimError):
    """A configuration value is invalid or a config file does not match this version."""


class CheckpointError(WorldsimError):
    """A checkpoint directory is missing, truncated, corrupt or incompatible."""


class InputError(WorldsimError):
    """Frames, actions or text passed to the engine have the wrong shape, type or range."""
