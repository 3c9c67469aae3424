"""Compatibility layers: other engines' APIs mapped onto streamkeep's core.

`streamkeep.compat.pyspark` is the PySpark Streaming facade (the only home of
camelCase names in streamkeep). Importing this package has no side effects;
``streamkeep.compat.pyspark.install()`` makes ``import pyspark`` resolve to the facade.
"""

from __future__ import annotations

__all__: list[str] = []
