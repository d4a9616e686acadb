"""Number formatting shared by the results page, its held-out tables and the progress page."""

from __future__ import annotations

import math


def _n(x, fmt=".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt) if abs(x) < 1e6 else format(x, ".3g")
