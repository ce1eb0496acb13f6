"""What a console URL may carry, checked before any store code sees it.

The patterns are the ones the dag processor enforces (as on the REST API),
so a path naming an id that cannot exist gets 422, never a query (PostgreSQL
refuses NUL in text), and numbers fit a 64-bit column.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from tether.protocol import ID_PATTERN, MAX_ID_LENGTH, MAX_WIRE_INT, RUN_ID_PATTERN

DagId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
TaskId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
RunId = Annotated[str, Path(pattern=f"^{RUN_ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
TryNumber = Annotated[int, Path(ge=1, le=MAX_WIRE_INT)]
#: -1 for a task that is not mapped.
MapIndex = Annotated[int, Query(ge=-1, le=MAX_WIRE_INT)]
Offset = Annotated[int, Query(ge=0, le=MAX_WIRE_INT)]
