"""The numba kernel that formats rows of Kaggle's Quick, Draw! CSVs straight into a byte buffer,
each a real drawing varied per copy (benchmarks.kaggle_folder writes whole files with it).

Formatting in a compiled kernel, not with Python strings, is what lets the full competition's 49.7M
rows (~24 GB) be written in minutes on 2 cores: about 400 MB/s a core, so the disk is the limit.
Every random draw comes from a splitmix64 generator whose state the caller passes in, so a file's
bytes depend only on its seed, never on which process wrote it.
"""

from __future__ import annotations

import numba
import numpy as np

# Constants of the kernel (module-level numpy scalars are compile-time constants to numba, and
# keep every operation on the key ids and the generator in uint64).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U11, _U23, _U26, _U27, _U30, _U31 = (np.uint64(k) for k in (11, 23, 26, 27, 30, 31))
_U5, _U31MASK = np.uint64(5), np.uint64(31)
#: key_id = KEY_BASE + a bijection of the row's global index on 51 bits: 16 digits, unique.
KEY_BASE = 4_500_000_000_000_000
_KEY_BASE = np.uint64(KEY_BASE)
MASK51 = np.uint64((1 << 51) - 1)  # key ids are 51-bit bijections (see KEY_BASE)
_KMUL1 = np.uint64(0x9E3779B97F4A7C15 & ((1 << 51) - 1))  # odd: invertible mod 2**51
_KMUL2 = np.uint64(0xBF58476D1CE4E5B9 & ((1 << 51) - 1))
_DROP_P = 0.1  # chance that a copy with 2+ strokes loses one
_JITTER_OF_32 = 6  # chance (of 32) that a coordinate moves by ±1
_DAYS = 95  # timestamps: 2017-01-01 .. 2017-04-05, like the real rows
_TRUE = np.frombuffer(b"True,", np.uint8)
_FALSE = np.frombuffer(b"False,", np.uint8)


# --------------------------------------------------------------------------- kernel
@numba.njit(inline="always")
def _next(state):
    """splitmix64: the next 64 random bits of the generator whose state is ``state[0]``."""
    z = state[0] + _GOLDEN
    state[0] = z
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@numba.njit(inline="always")
def _uniform(state):
    return np.float64(_next(state) >> _U11) * (1.0 / 9007199254740992.0)


@numba.njit(inline="always")
def _below(state, n):
    """A random int in [0, n)."""
    return min(int(_uniform(state) * n), n - 1)


@numba.njit(cache=True, nogil=True)
def _key_id(g, k0, k1):
    """The key_id of global row ``g``: a bijection on 51 bits (add, odd multiplies, xor-shifts)."""
    x = (g + k0) & MASK51
    x = (x * _KMUL1) & MASK51
    x ^= x >> _U23
    x = (x * _KMUL2) & MASK51
    x ^= x >> _U26
    x = (x + k1) & MASK51
    return _KEY_BASE + x


@numba.njit(cache=True, nogil=True)
def key_ids(first, n, k0, k1):
    """The key_ids of global rows first .. first + n - 1 (uint64)."""
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i] = _key_id(np.uint64(first + i), k0, k1)
    return out


@numba.njit(inline="always")
def _put_small(buf, p, v):
    if v >= 100:
        buf[p] = 48 + v // 100
        buf[p + 1] = 48 + (v // 10) % 10
        buf[p + 2] = 48 + v % 10
        return p + 3
    if v >= 10:
        buf[p] = 48 + v // 10
        buf[p + 1] = 48 + v % 10
        return p + 2
    buf[p] = 48 + v
    return p + 1


@numba.njit(inline="always")
def _put2(buf, p, v):
    buf[p] = 48 + v // 10
    buf[p + 1] = 48 + v % 10
    return p + 2


@numba.njit(inline="always")
def _put_key(buf, p, key):
    v = np.int64(key)
    digits = 1
    t = v
    while t >= 10:
        t //= 10
        digits += 1
    for i in range(digits - 1, -1, -1):
        buf[p + i] = 48 + v % 10
        v //= 10
    return p + digits


@numba.njit(inline="always")
def _put_bytes(buf, p, src, a, b):
    for i in range(a, b):
        buf[p] = src[i]
        p += 1
    return p


@numba.njit(inline="always")
def _put_coords(buf, p, state, vals, a, b, lo, f, shift):
    """One stroke's x (or y) list, scaled, shifted and jittered, inside 0..255."""
    bits = np.uint64(0)
    left = 0
    for k in range(a, b):
        if k > a:
            buf[p] = 44
            buf[p + 1] = 32
            p += 2
        v = int((np.int64(vals[k]) - lo) * f + 0.5) + shift
        if left == 0:
            bits = _next(state)
            left = 12
        t = int(bits & _U31MASK)
        bits >>= _U5
        left -= 1
        if t < _JITTER_OF_32:
            v += 1 if t & 1 else -1
            v = min(max(v, 0), 255)
        p = _put_small(buf, p, v)
    return p


@numba.njit(inline="always")
def _put_drawing(buf, p, state, j, xs, ys, spts, sdraw, bbox):
    """A varied copy of base drawing ``j``, quoted, with Kaggle's ", " separators."""
    s0, s1 = sdraw[j], sdraw[j + 1]
    drop = -1
    if s1 - s0 >= 2 and _uniform(state) < _DROP_P:
        drop = s0 + _below(state, s1 - s0)
    f = 0.8 + 0.2 * _uniform(state)
    x0, y0 = bbox[j, 0], bbox[j, 1]
    dx = _below(state, 256 - int((bbox[j, 2] - x0) * f + 0.5))
    dy = _below(state, 256 - int((bbox[j, 3] - y0) * f + 0.5))
    buf[p] = 34  # "
    buf[p + 1] = 91  # [
    p += 2
    first = True
    for s in range(s0, s1):
        if s == drop:
            continue
        if not first:
            buf[p] = 44
            buf[p + 1] = 32
            p += 2
        first = False
        buf[p] = 91
        buf[p + 1] = 91
        p += 2
        p = _put_coords(buf, p, state, xs, spts[s], spts[s + 1], x0, f, dx)
        buf[p] = 93  # "], ["
        buf[p + 1] = 44
        buf[p + 2] = 32
        buf[p + 3] = 91
        p += 4
        p = _put_coords(buf, p, state, ys, spts[s], spts[s + 1], y0, f, dy)
        buf[p] = 93
        buf[p + 1] = 93
        p += 2
    buf[p] = 93
    buf[p + 1] = 34
    return p + 2


@numba.njit(inline="always")
def _put_timestamp(buf, p, state):
    """e.g. 2017-03-03 17:58:50.53529: early 2017, five fraction digits less trailing zeros (as Kaggle's)."""
    day = _below(state, _DAYS)
    if day < 31:
        month, dom = 1, day + 1
    elif day < 59:
        month, dom = 2, day - 30
    elif day < 90:
        month, dom = 3, day - 58
    else:
        month, dom = 4, day - 89
    buf[p] = 50  # 2017-
    buf[p + 1] = 48
    buf[p + 2] = 49
    buf[p + 3] = 55
    buf[p + 4] = 45
    p = _put2(buf, p + 5, month)
    buf[p] = 45
    p = _put2(buf, p + 1, dom)
    buf[p] = 32
    p = _put2(buf, p + 1, _below(state, 24))
    buf[p] = 58
    p = _put2(buf, p + 1, _below(state, 60))
    buf[p] = 58
    p = _put2(buf, p + 1, _below(state, 60))
    buf[p] = 46
    frac = 1 + _below(state, 99_999)
    for i in range(5, 0, -1):
        buf[p + i] = 48 + frac % 10
        frac //= 10
    p += 6
    while buf[p - 1] == 48:  # Kaggle's fractions have no trailing zeros (frac >= 1: one digit stays)
        p -= 1
    return p


@numba.njit(cache=True, nogil=True)
def fill_block(buf, state, todo, first, k0, k1, test, word, bases, xs, ys, spts, sdraw, bbox, rec, cc, cc_off, reserve):
    """Format up to ``todo`` rows into ``buf`` (stopping while ``reserve`` bytes, the longest row,
    still fit); returns (bytes, rows). Rows are train rows of ``word`` drawn from ``bases``, or
    test rows when ``test``; the first is global row ``first`` (its key_id). ``state`` carries
    the generator from call to call."""
    p = 0
    r = 0
    n_bases = bases.shape[0]
    n_cc = cc_off.shape[0] - 1
    size = buf.shape[0]
    while r < todo and p + reserve <= size:
        j = bases[_below(state, n_bases)]
        c = _below(state, n_cc)
        key = _key_id(np.uint64(first + r), k0, k1)
        if test:
            p = _put_key(buf, p, key)
            buf[p] = 44
            p = _put_bytes(buf, p + 1, cc, cc_off[c], cc_off[c + 1])
            buf[p] = 44
            p = _put_drawing(buf, p + 1, state, j, xs, ys, spts, sdraw, bbox)
        else:
            p = _put_bytes(buf, p, cc, cc_off[c], cc_off[c + 1])
            buf[p] = 44
            p = _put_drawing(buf, p + 1, state, j, xs, ys, spts, sdraw, bbox)
            buf[p] = 44
            p = _put_key(buf, p + 1, key)
            buf[p] = 44
            p += 1
            if rec[j]:
                p = _put_bytes(buf, p, _TRUE, 0, 5)
            else:
                p = _put_bytes(buf, p, _FALSE, 0, 6)
            p = _put_timestamp(buf, p, state)
            buf[p] = 44
            p = _put_bytes(buf, p + 1, word, 0, word.shape[0])
        buf[p] = 13
        buf[p + 1] = 10
        p += 2
        r += 1
    return p, r
