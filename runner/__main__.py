"""`python -m runner` is the `lockstep` command."""

import sys

from runner.cli import main

sys.exit(main())
