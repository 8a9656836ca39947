"""Tables gathered before they leave a DoFn: given back as one when they reach the rows asked for,
and whatever is left at the end."""
import pyarrow as pa

from pipeline.transforms.gather import GatheredTables


def table(start, rows):
    return pa.table({'n': list(range(start, start + rows))})


def test_tables_leave_as_one_once_they_reach_the_rows_asked_for():
    gathered = GatheredTables(5)
    assert gathered.add(table(0, 2)) is None and gathered.add(table(2, 2)) is None
    full = gathered.add(table(4, 3))
    assert full is not None and full.column('n').to_pylist() == list(range(7))
    assert gathered.take() is None  # nothing held after
    assert gathered.add(table(7, 1)) is None
    assert gathered.take().column('n').to_pylist() == [7]
