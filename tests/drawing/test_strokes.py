"""StrokeBatch (doodle.drawing.strokes): to and from the shards' Arrow columns, take and expand."""

import numpy as np
import pyarrow as pa
import pytest

from doodle.drawing.strokes import STROKE_FIELDS, StrokeBatch


def test_arrow_roundtrip_take_and_expand():
    drawings = [[[[1, 2], [3, 4]], [[5], [6]]], [[[7, 8, 9], [1, 1, 1]]], [[[0], [0]]]]
    b = StrokeBatch.from_lists(drawings)
    cols = b.to_arrow()
    assert [c.type for c in cols] == [f.type for f in STROKE_FIELDS]
    assert cols[0].to_pylist()[0] == bytes([1, 2, 5]) and cols[2].to_pylist()[0] == [2, 1]
    back = StrokeBatch.from_arrow(*cols)
    assert [back.drawing(i) for i in range(3)] == [b.drawing(i) for i in range(3)]
    sub = StrokeBatch.from_arrow(*(c.slice(1, 2) for c in cols))
    assert sub.drawing(0) == [([7, 8, 9], [1, 1, 1])] and sub.drawing(1) == [([0], [0])]
    gathered = StrokeBatch.from_arrow(*(c.take(pa.array([2, 0])) for c in b.take(np.array([0, 1, 2])).to_arrow()))
    assert gathered.drawing(0) == [([0], [0])] and gathered.drawing(1) == b.drawing(0)
    x, y, lens = cols
    with pytest.raises(ValueError, match="stroke_len does not add up"):
        StrokeBatch.from_arrow(x, y, pa.array([[2, 2], [3], [1]], pa.list_(pa.int32())))
    with pytest.raises(ValueError, match="x and y"):
        StrokeBatch.from_arrow(x, pa.array([b"\x03\x04\x06", b"\x01\x01", b"\x00"]), lens)
    t = b.take(np.array([2, 0]))
    assert t.drawing(0) == [([0], [0])] and t.drawing(1) == b.drawing(0)
    e = b.expand(np.array([False, True, True, False, True]))
    assert len(e) == 5 and e.drawing(0) == [] and e.drawing(1) == b.drawing(0) and e.drawing(4) == b.drawing(2)
    assert b.point_counts().tolist() == [3, 3, 1] and b.stroke_counts().tolist() == [2, 1, 1]
