"""Property test: the compiled drawing parser agrees with ``json`` on thousands of mutated drawings.

The reference for a text is: EMPTY_STRING if it is empty or only JSON whitespace (space, tab, LF,
CR), else MALFORMED_JSON if ``json.loads`` raises, else ``classify_drawing(json.loads(text))``;
for texts it accepts, the parsed coordinates must equal json's values. The mutants start from
real drawings (``quickdraw-real15`` when the shared data is there) or from the project's own
generator, and go through seeded edits of the text (characters from the JSON alphabet, brackets
doubled or dropped, leading zeros, huge or float numbers, odd whitespace, truncation, trailing
text) and of the decoded structure (swapped, emptied, nested, lengthened lists), so every
status code comes up. Deterministic: fixed seeds, no wall-clock dependence.
"""

from __future__ import annotations

import csv
import json
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from doodle.drawing import parse as S
from doodle.drawing.parse import classify_drawing, parse_drawings
from tests.conftest import SHARED

REAL15 = SHARED / "quickdraw-real15" / "train_simplified"
SEED = 20180926  # the competition's launch date
N_SEEDS = 150
N_MUTANTS = 4000
JSON_WS = " \t\n\r"
ALPHABET = '[]{},-.0123456789eE +\t\n"a'
ALL_STATUSES = {
    S.OK,
    S.EMPTY_STRING,
    S.MALFORMED_JSON,
    S.WRONG_TYPE,
    S.EMPTY_DRAWING,
    S.EMPTY_STROKE,
    S.XY_LENGTH_MISMATCH,
    S.OUT_OF_RANGE,
}
NUMBER = re.compile(r"-?[0-9]+")
# Tokens put in place of a coordinate: leading zeros, signs, floats, huge integers (past int64
# and past Python's 4300-digit int parsing limit), JSON's other literals, non-JSON numbers.
NUMBER_TOKENS = [
    *["0", "-0", "00", "-00", "01", "-01", "007", "0255", "255", "256", "-1", "1000", "99999"],
    *["100000", "1" * 19, "9" * 25, "-" + "9" * 25, "1" + "0" * 4400],
    *["1.0", "1.5", "-0.0", "0.", ".5", "1e2", "1E2", "2e-1", "0e0", "1e", "1.e1"],
    *["-", "+1", "--1", "- 1", "0x1F", "1_0", "\u0661", "NaN", "Infinity", "-Infinity"],
    *["true", "false", "null", '"1"', "[1]", "[]", "{}"],
]
WHITESPACE = [" ", "\t", "\n", "\r", " \r\n\t", "\x0b", "\x0c", "\xa0", "\u3000", "\ufeff", "\x00"]
TAILS = [",", "]", "[", " x", "[]", "0", "\n", " ", ",[]", "}", "]]", "\t\r\n", "null"]
SEPARATORS = [(",", ":"), (", ", ": "), (" , ", ":"), ("\t,\n", ":"), (",\r", ":")]
HAND_MADE = [
    *["", " ", "\t\n\r ", "\x0b", "\x0c", "\xa0", "\ufeff[[[1],[2]]]", "\x00", "[", "]", "[[", "[]]", "[] x"],
    *["[[[01],[2]]]", "[[[1],[00]]]", "[[[-01],[2]]]", "[[[-0],[2]]]", "[[[-],[2]]]", "[[[+1],[2]]]"],
    *["[[[1" + "0" * 5000 + "],[2]]]", "[[[" + "9" * 30 + "],[2]]]", "[[[1,],[2]]]", "[[[1],[2]],]"],
    *["[[[1],[2],]]", "[[[[1]],[2]]]", "[[[1],[2]]] [", "[[[1],[2]]]x", "[[[1],[2]]]\x0b", " [ ] ", "[]\n"],
    *["[[[1],[2]]", "[[[1.0],[2]]]", "[[[1e0],[2]]]", "[[[1],[2]]][[[1],[2]]]", "[[]]", "[[[],[]]]"],
]


# --------------------------------------------------------------------------- reference
def reference(text: str):
    """(status, decoded drawing or None) by the definition above."""
    if text.strip(JSON_WS) == "":
        return S.EMPTY_STRING, None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return S.MALFORMED_JSON, None
    code = classify_drawing(obj)
    return code, (obj if code == S.OK else None)


def as_parsed(obj) -> list[tuple[list[int], list[int]]]:
    """A decoded drawing in the form :meth:`StrokeBatch.drawing` returns."""
    return [(list(x), list(y)) for x, y in obj]


# --------------------------------------------------------------------------- seeds
def real_drawings(per_file: int) -> list[str]:
    texts = []
    for path in sorted(REAL15.glob("*.csv")):
        with path.open(newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if i >= per_file:
                    break
                texts.append(row["drawing"])
    return texts


def generated_drawings(n: int) -> list[str]:
    from doodle.sample.doodles import SHAPES, draw

    rng = np.random.default_rng(SEED)
    words = sorted(SHAPES)
    return [json.dumps(draw(words[i % len(words)], rng), separators=(",", ":")) for i in range(n)]


def seed_drawings(source: str) -> list[str]:
    if source == "real15":
        if not REAL15.is_dir():
            pytest.skip(f"{REAL15} not present (the generated drawings stand in)")
        files = len(list(REAL15.glob("*.csv")))
        texts = real_drawings(per_file=-(-N_SEEDS // max(files, 1)))
    else:
        texts = generated_drawings(N_SEEDS)
    assert texts and all(reference(t)[0] == S.OK for t in texts)
    return texts


# --------------------------------------------------------------------------- text mutations
def _pick(r: random.Random, text: str, chars: str) -> int | None:
    pos = [i for i, c in enumerate(text) if c in chars]
    return r.choice(pos) if pos else None


def insert_char(t, r):
    i = r.randint(0, len(t))
    return t[:i] + r.choice(ALPHABET) + t[i:]


def delete_char(t, r):
    i = r.randrange(len(t)) if t else 0
    return t[:i] + t[i + 1 :]


def replace_char(t, r):
    i = r.randrange(len(t)) if t else 0
    return t[:i] + r.choice(ALPHABET) + t[i + 1 :]


def double_bracket(t, r):
    i = _pick(r, t, "[]")
    return t if i is None else t[:i] + t[i] + t[i:]


def drop_bracket(t, r):
    i = _pick(r, t, "[]")
    return t if i is None else t[:i] + t[i + 1 :]


def leading_zero(t, r):
    numbers = list(NUMBER.finditer(t))
    if not numbers:
        return t
    m = r.choice(numbers)
    i = m.start() + (t[m.start()] == "-")
    return t[:i] + "0" * r.choice([1, 1, 2, 5]) + t[i:]


def replace_number(t, r):
    numbers = list(NUMBER.finditer(t))
    if not numbers:
        return t
    m = r.choice(numbers)
    return t[: m.start()] + r.choice(NUMBER_TOKENS) + t[m.end() :]


def add_whitespace(t, r):
    i = r.choice([0, len(t), r.randint(0, len(t))])
    return t[:i] + r.choice(WHITESPACE) + t[i:]


def truncate(t, r):
    return t[: r.randint(0, len(t))]


def add_tail(t, r):
    tail = r.choice(TAILS)
    return t + tail if r.random() < 0.8 else tail + t


def trailing_comma(t, r):
    i = _pick(r, t, "]")
    return t if i is None else t[:i] + "," + t[i:]


def swap_chars(t, r):
    if len(t) < 2:
        return t
    i = r.randrange(len(t) - 1)
    return t[:i] + t[i + 1] + t[i] + t[i + 2 :]


TEXT_MUTATIONS = [
    insert_char,
    delete_char,
    replace_char,
    double_bracket,
    drop_bracket,
    leading_zero,
    leading_zero,
    replace_number,
    replace_number,
    add_whitespace,
    truncate,
    add_tail,
    trailing_comma,
    swap_chars,
]


# --------------------------------------------------------------------------- structure mutations
def mutate_structure(d: list, r: random.Random):
    """One edit of a decoded drawing (a deep copy), keeping it JSON-serialisable."""
    d = json.loads(json.dumps(d))
    s = r.randrange(len(d))
    kind = r.randrange(14)
    if kind == 0 and len(d) > 1:  # swap two strokes
        j = r.randrange(len(d))
        d[s], d[j] = d[j], d[s]
    elif kind == 1:  # swap x and y
        d[s] = d[s][::-1]
    elif kind == 2 and d[s][0] and d[s][1]:  # one point fewer in x or y: length mismatch
        d[s][r.randrange(2)].pop()
    elif kind == 3:  # empty stroke
        d[s] = [[], []]
    elif kind == 4:  # raw data's third (time) list
        d[s].append(list(range(len(d[s][0]))))
    elif kind == 5:  # a stroke with one list
        d[s] = d[s][:1]
    elif kind == 6:  # no strokes at all
        d = []
    elif kind == 7:  # one level too deep
        d = [d] if r.random() < 0.5 else [*d[:s], [d[s]], *d[s + 1 :]]
    elif kind == 8 and d[s][0] and d[s][1]:  # a coordinate of another type or out of range
        xs = d[s][r.randrange(2)]
        xs[r.randrange(len(xs))] = r.choice([-1, 256, -(10**30), 10**30, 0, 255, 1.0, 2.5, True, None, "7", [3], {}])
    elif kind == 9:  # an empty x or y list
        d[s][r.randrange(2)] = []
    elif kind == 10:  # a stroke that is not a list
        d[s] = r.choice([None, 1, "s", {"x": [1]}])
    elif kind == 11:  # drop a stroke
        del d[s]
    elif kind == 12:  # the drawing is not a list
        d = r.choice([None, 0, "d", {"drawing": d}, True])
    else:  # reverse the strokes
        d = d[::-1]
    return d


def dump(obj, r: random.Random) -> str:
    if r.random() < 0.2:
        return json.dumps(obj, indent=r.choice([0, 1, "\t"]))
    item, key = r.choice(SEPARATORS)
    return json.dumps(obj, separators=(item, key))


def mutants(seeds: list[str], n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    out = list(HAND_MADE)
    while len(out) < n:
        t = r.choice(seeds)
        if r.random() < 0.35:
            obj = json.loads(t)
            for _ in range(r.choice([1, 1, 2])):
                if not (isinstance(obj, list) and obj and all(isinstance(s, list) and len(s) >= 2 for s in obj)):
                    break
                obj = mutate_structure(obj, r)
            t = dump(obj, r)
        for _ in range(r.choice([0, 1, 1, 1, 2, 3])):
            t = r.choice(TEXT_MUTATIONS)(t, r)
        out.append(t)
    return out


# --------------------------------------------------------------------------- the properties
def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:60] + "..." + text[-20:])


@pytest.fixture(scope="module", params=["real15", "generated"])
def corpus(request):
    texts = mutants(seed_drawings(request.param), N_MUTANTS, SEED)
    return texts, [reference(t) for t in texts]


def test_mutants_cover_every_status(corpus):
    texts, refs = corpus
    counts = {code: sum(c == code for c, _ in refs) for code in ALL_STATUSES}
    assert all(counts.values()), f"some status never comes up: {counts}"
    assert counts[S.OK] > len(texts) // 10


def test_each_mutant_alone_gets_the_reference_status_and_values(corpus):
    wrong = []
    for text, (code, obj) in zip(*corpus):
        parsed = parse_drawings([text])
        got = int(parsed.status[0])
        if got != code:
            wrong.append(f"{_show(text)}: parser {got}, reference {code}")
        elif code == S.OK and parsed.strokes.drawing(0) != as_parsed(obj):
            wrong.append(f"{_show(text)}: values differ")
    assert not wrong, f"{len(wrong)} of {len(corpus[0])} mutants disagree, e.g.\n" + "\n".join(wrong[:20])


@pytest.mark.parametrize("form", ["list", "large_string_slice"])
def test_whole_batch_gives_the_same_statuses_and_values_in_order(corpus, form):
    texts, refs = corpus
    if form == "list":
        batch = texts
    else:  # an offset into the buffers, 64-bit offsets
        batch = pa.array(["[[[9],[9]]]", *texts], pa.large_string()).slice(1)
    parsed = parse_drawings(batch)
    expected = [code for code, _ in refs]
    diff = [i for i, (a, b) in enumerate(zip(parsed.status.tolist(), expected)) if a != b]
    assert not diff, "batch disagrees, e.g. " + ", ".join(
        f"{_show(texts[i])}: {parsed.status[i]} vs {expected[i]}" for i in diff[:10]
    )
    valid = [obj for code, obj in refs if code == S.OK]
    assert len(parsed.strokes) == len(valid)
    assert [parsed.strokes.drawing(k) for k in range(len(valid))] == [as_parsed(obj) for obj in valid]
