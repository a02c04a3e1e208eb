"""`python -m gankit ...` (and `torchrun ... -m gankit ...`) is the `gankit` command."""
from gankit.cli import entry

entry()
