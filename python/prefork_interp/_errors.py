"""The package's public exception (kept apart so ``import prefork_interp``
stays cheap for scripts run standalone)."""

__all__ = ["PreforkError"]


class PreforkError(RuntimeError):
    """The server cannot be set up: ``PREFORK_INTERP`` or the fds it names
    are not what prefork-interp provides.  Raised in the setup process, so
    the first caller sees it."""


PreforkError.__module__ = "prefork_interp"  # where users import it from
