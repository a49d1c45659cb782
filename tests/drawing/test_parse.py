"""The drawing parser (doodle.drawing.parse): each row's status, order kept, the fast path against json."""

import json

import numpy as np
import pyarrow as pa
import pytest

from doodle.drawing import parse as S
from doodle.drawing.parse import classify_drawing, parse_drawings

CASES = [
    ("[[[1,2,3],[4,5,6]],[[7],[8]]]", S.OK),
    ("[[[10, 20], [30, 40]]]", S.OK),
    (" [ [ [ 1 , 2 ] , [ 3 , 4 ] ] ] ", S.OK),
    ("[[[0],[255]]]", S.OK),  # a one-point stroke is a valid dot
    ("", S.EMPTY_STRING),
    ("   ", S.EMPTY_STRING),
    ("[[[1,2],[3,4]]", S.MALFORMED_JSON),
    ("not json", S.MALFORMED_JSON),
    ("[]", S.EMPTY_DRAWING),
    ("[[[1,2],[3]]]", S.XY_LENGTH_MISMATCH),
    ("[[[1,2],[3,4]],[[],[]]]", S.EMPTY_STROKE),
    ("[[[1,256],[3,4]]]", S.OUT_OF_RANGE),
    ("[[[1,-2],[3,4]]]", S.OUT_OF_RANGE),
    ("[[[1.5,2],[3,4]]]", S.WRONG_TYPE),
    ('[[[1,2],["3",4]]]', S.WRONG_TYPE),
    ("[[[1,2],[3,4],[0,1]]]", S.WRONG_TYPE),  # raw data's time list is not accepted
    ('{"a": 1}', S.WRONG_TYPE),
    ("null", S.WRONG_TYPE),
    ("[[[true,2],[3,4]]]", S.WRONG_TYPE),
    # JSON's own syntax, exactly as json.loads reads it (tests/drawing/test_parser_property.py fuzzes the rest)
    ("[[[-0,0],[0,10]]]", S.OK),  # -0 is the integer 0
    ("\t\n\r [[[100,200],[5,50]]] \r\n\t", S.OK),  # JSON whitespace: space, tab, LF, CR
    ("[[[01],[2]]]", S.MALFORMED_JSON),  # leading zeros are not JSON
    ("[[[1],[00]]]", S.MALFORMED_JSON),
    ("[[[-01],[2]]]", S.MALFORMED_JSON),
    ("[[[0255],[2]]]", S.MALFORMED_JSON),
    ("[[[-],[2]]]", S.MALFORMED_JSON),
    ("[[[+1],[2]]]", S.MALFORMED_JSON),
    ("[[[1],[2]]]\x0b", S.MALFORMED_JSON),  # vertical tab, form feed, no-break space: not JSON whitespace
    ("\x0c", S.MALFORMED_JSON),
    ("\xa0[[[1],[2]]]", S.MALFORMED_JSON),
    ("[[[1,],[2]]]", S.MALFORMED_JSON),  # trailing commas
    ("[[[1],[2]],]", S.MALFORMED_JSON),
    ("[[[1],[2]]] x", S.MALFORMED_JSON),  # text after the drawing
    ("[] []", S.MALFORMED_JSON),
    ("[[[1" + "0" * 20 + "],[2]]]", S.OUT_OF_RANGE),  # past int64, still an integer
    ("[[[1" + "0" * 5000 + "],[2]]]", S.MALFORMED_JSON),  # past Python's limit on int parsing (4300 digits)
    ("[[[1e2],[2]]]", S.WRONG_TYPE),  # an exponent makes a float
    ("[[[1.0],[2]]]", S.WRONG_TYPE),
    ("[[[[1]],[2]]]", S.WRONG_TYPE),  # one level too deep
    ("[[[1],[2]],[[3]]]", S.WRONG_TYPE),
    (" [ ] ", S.EMPTY_DRAWING),
]


@pytest.mark.parametrize("text,code", CASES)
def test_each_row_kind_gets_its_status(text, code):
    assert parse_drawings([text]).status.tolist() == [code]


def test_valid_rows_keep_order_and_values_among_bad_ones():
    texts = [c[0] for c in CASES]
    parsed = parse_drawings(texts)
    assert parsed.status.tolist() == [c[1] for c in CASES]
    assert len(parsed.strokes) == sum(c[1] == S.OK for c in CASES)
    assert parsed.strokes.drawing(0) == [([1, 2, 3], [4, 5, 6]), ([7], [8])]
    assert parsed.strokes.drawing(3) == [([0], [255])]
    ok = [json.loads(text) for text, code in CASES if code == S.OK]
    assert [parsed.strokes.drawing(k) for k in range(len(ok))] == [[tuple(s) for s in d] for d in ok]


def test_null_values_are_empty_strings():
    parsed = parse_drawings(pa.array(["[[[1],[2]]]", None], pa.string()))
    assert parsed.status.tolist() == [S.OK, S.EMPTY_STRING]


def test_fast_path_agrees_with_json_reference_on_random_drawings():
    rng = np.random.default_rng(1)
    texts, expected = [], []
    for _ in range(300):
        d = [
            [rng.integers(-3, 260, n).tolist(), rng.integers(0, 256, n + int(rng.random() < 0.1)).tolist()]
            for n in rng.integers(0, 6, rng.integers(0, 4))
        ]
        texts.append(json.dumps(d))
        expected.append(classify_drawing(d))
    assert parse_drawings(texts).status.tolist() == expected
