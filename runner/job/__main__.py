"""`python -m runner.job CONFIG [--set KEY=VALUE ...]`: the in-job entry point every backend starts."""

import sys

from runner.job.entry import main

sys.exit(main())
