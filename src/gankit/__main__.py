"""`python -m gankit ...` (and `torchrun ... -m gankit ...`) is the `gankit` command."""
from gankit.cli import main

raise SystemExit(main())
