"""The package version, one place for ``worldsim --version``, the Hub client and ``worldsim.__version__``."""

__version__ = "0.1.0"
