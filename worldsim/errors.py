"""User-facing errors and warnings. The CLI prints an error as one line and exits with code 2 (no traceback), a
warning as one line and goes on."""


class WorldsimError(Exception):
    """A mistake the user can fix (bad input, bad flag, bad file). Message says what to do."""


class ConfigError(WorldsimError):
    """A configuration value is invalid or a config file does not match this version."""


class CheckpointError(WorldsimError):
    """A checkpoint directory is missing, truncated, corrupt or incompatible."""


class InputError(WorldsimError):
    """Frames, actions or text passed to the engine have the wrong shape, type or range."""


class WorldsimWarning(UserWarning):
    """Something worldsim did in place of what was asked, said once; the CLI prints it as one line on stderr."""


class ActionClippedWarning(WorldsimWarning):
    """A policy's Box action was outside the bounds and was clipped into them (``worldsim.predict``)."""
