"""One-line alternative to ``streamkeep run --pyspark``: ``import streamkeep.compat.pyspark.auto``.

Importing this module calls `streamkeep.compat.pyspark.install()`, so the
program's later ``import pyspark`` statements resolve to the facade. This is
the only streamkeep module whose import has a side effect; that is its purpose.
"""

from __future__ import annotations

from streamkeep.compat.pyspark import install

install()
