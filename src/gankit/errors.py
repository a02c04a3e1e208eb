"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (flag, name, value, file): the message says what and how to fix it."""


class ConfigError(UserError):
    """A config key or value that cannot be used."""


class TrainingError(Exception):
    """Training cannot go on (it diverged, or its checkpoint cannot be written): a diagnosis, not a bug."""
