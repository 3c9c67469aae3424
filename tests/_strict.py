"""`same`: equality that also demands the same types all the way down (1 != 1.0 != True).

Shared by the codec tests, which must prove a round trip preserves types exactly.
"""

from __future__ import annotations

import math
from datetime import datetime, time
from decimal import Decimal
from typing import Any


def same(a: Any, b: Any) -> bool:
    """True if ``a`` and ``b`` are equal *and* of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        return a.compare_total(b) == 0  # exact: 1.0 != 1.00, -0 != 0, NaN == NaN
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, (datetime, time)):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and (a.tzinfo is None) == (b.tzinfo is None)
            and a.utcoffset() == b.utcoffset()
        )
    return bool(a == b)
