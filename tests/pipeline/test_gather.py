"""Tables gathered before they leave a DoFn: given back as one when they reach the rows asked for,
and whatever is left at the end."""
import pyarrow as pa

from pipeline.core.counts import Counts
from pipeline.transforms.gather import GatheredTables


def table(start, rows):
    return pa.table({'n': list(range(start, start + rows))})


def test_tables_leave_as_one_once_they_reach_the_rows_asked_for():
    gathered, counts = GatheredTables(5, 'rows_out'), Counts()
    assert gathered.add(table(0, 2), counts) is None and gathered.add(table(2, 2), counts) is None
    assert counts.get('rows_out') == 0  # held, not yet out
    full = gathered.add(table(4, 3), counts)
    assert full is not None and full.column('n').to_pylist() == list(range(7)) and counts.get('rows_out') == 7
    assert gathered.take(counts) is None  # nothing held after
    assert gathered.add(table(7, 1), counts) is None
    assert gathered.take(counts).column('n').to_pylist() == [7] and counts.get('rows_out') == 8
