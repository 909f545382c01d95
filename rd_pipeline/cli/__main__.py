"""`python -m rd_pipeline.cli`: the `rd` command."""

import sys

from rd_pipeline.cli import main

sys.exit(main())
