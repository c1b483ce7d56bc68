"""``python -m pipelines.cli VERB ...``: the same as the ``journeylake`` command."""

import sys

from pipelines.cli import main

sys.exit(main())
