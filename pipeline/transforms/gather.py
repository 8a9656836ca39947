"""Arrow tables a DoFn makes per element, gathered before they leave: a bucket's rows are few, and one
element per bucket would make as many small row groups downstream."""
from typing import List, Optional

import pyarrow as pa

from pipeline.core.counts import Counts


class GatheredTables:
    """Tables held until they reach `rows` rows (`add` then gives them back as one), and whatever is
    held at the end of a bundle (`take`); the rows given back are counted under `counter`."""

    def __init__(self, rows: int, counter: str):
        self._rows = rows
        self._counter = counter
        self._tables: List[pa.Table] = []
        self._pending = 0

    def add(self, table: pa.Table, counts: Counts) -> Optional[pa.Table]:
        self._tables.append(table)
        self._pending += table.num_rows
        return self.take(counts) if self._pending >= self._rows else None

    def take(self, counts: Counts) -> Optional[pa.Table]:
        """The tables held, as one (None when none is)."""
        if not self._tables:
            return None
        table = pa.concat_tables(self._tables)
        self._tables, self._pending = [], 0
        counts.scalars[self._counter] += table.num_rows
        return table
