"""Errors a user can act on. Every message names the file, key or band at fault."""


class MinescanError(Exception):
    """Base class: the CLI prints these as one clear line and exits 2, without a traceback."""


class ConfigError(MinescanError):
    pass


class InputDataError(MinescanError):
    pass


class BandMismatchError(InputDataError):
    pass


class NoDataError(InputDataError):
    pass


class ModelError(MinescanError):
    pass
