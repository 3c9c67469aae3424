"""`python -m streamkeep.cli` = the `streamkeep` command."""

from __future__ import annotations

import sys

from streamkeep.cli import main

sys.exit(main())
