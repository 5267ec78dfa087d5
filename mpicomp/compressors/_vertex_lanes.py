"""Cross-polytope vertex draws for ``LANES = 16`` buckets at a time, one bucket per SIMD lane.

A bucket-by-bucket loop runs a dependent chain of additions per bucket (the running sum of
``|x_i|``) and compares scalars; here the 16 chains advance together, one vector operation per
coordinate. Coordinates are loaded 8 at a time from each of 8 buckets (contiguous loads) and
transposed by a network of 24 two-vector shuffles (:func:`_transpose_network`), so that coordinate
``i`` of the 16 buckets is one vector. Per coordinate ``i`` (``< n_b``, the length of bucket b):

* ``P = P + |x_i| pre`` (the running sum, summed in the same order as a scalar loop, so bit for bit
  the same float64 values);
* ``c_k = c_k + [P <= t_k]`` for the two draws' targets ``t_k = u_k sqrt(n_b) nu``: ``c_k`` counts
  the running sums at or below ``t_k``, so the picked coordinate is ``min(c_k, n_b - 1)``.

The picked coordinates' values (their signs are the draws') are then loaded lane by lane, 32 loads
per 16 buckets: tracking them through the loop (a compare and a select per draw and coordinate) took
half of the kernel's time. The vertex codes follow lane-wise as in
:func:`~mpicomp.compressors.cross_polytope.draw_vertices`.
Everything is LLVM vector IR (lowered for whatever SIMD width the machine has); the kernel reads 8
coordinates past each of its 16 buckets' starts per block, so callers pass a zero-padded copy
where that would run past the end of x.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types

from ..rng import _MIX1, _MIX2, GOLDEN
from ..wire.bitpack import llvm_intrinsic

LANES = 16  # buckets per call: two 8-lane halves, whose chains overlap in the pipeline
BLOCK = 8  # coordinates per transposed block: 8 buckets x 8 coordinates
_F64 = ir.DoubleType()
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_DOUBLES = ir.VectorType(_F64, LANES)
_WORDS = ir.VectorType(_I64, LANES)


def _transpose_network() -> tuple[list[list[tuple[int, int, list[int], list[int]]]], list[int]]:
    """Shuffles that transpose 8 vectors of 8 (rows r, elements c): per stage (distances 1, 2, 4),
    ``(a, b, low, high)`` replaces vectors a and b by ``shuffle(a, b, low)`` and ``shuffle(a, b, high)``;
    also which final vector holds which column."""
    labels = [[(r, c) for c in range(BLOCK)] for r in range(BLOCK)]
    stages = []
    for distance in (1, 2, 4):
        stage = []
        for a in (r for r in range(BLOCK) if not r & distance):
            b = a + distance
            low = [j if not j & distance else j - distance + BLOCK for j in range(BLOCK)]
            high = [j + distance if not j & distance else j + BLOCK for j in range(BLOCK)]
            pair = labels[a] + labels[b]
            labels[a], labels[b] = [pair[m] for m in low], [pair[m] for m in high]
            stage.append((a, b, low, high))
        stages.append(stage)
    assert all([r for r, _ in row] == list(range(BLOCK)) and len({c for _, c in row}) == 1 for row in labels)
    return stages, [row[0][1] for row in labels]


_STAGES, _COLUMN_OF = _transpose_network()


def _constant(value: float | int) -> ir.Constant:
    """A vector of LANES copies of a float64 (float) or int64 (int) constant."""
    if isinstance(value, float):
        return ir.Constant(_DOUBLES, [value] * LANES)
    return ir.Constant(_WORDS, [value] * LANES)


def _splat(builder, value, vector):
    """The vector of type ``vector`` with ``value`` in every lane."""
    single = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(single, single, ir.Constant(ir.VectorType(_I32, vector.count), [0] * vector.count))


def _lane_uniforms(builder, state, index):
    """``random_uniform(state, index)`` lane-wise: ``(mix64(state + (index + 1) GOLDEN) >> 11) 2^-53``."""
    z = builder.add(
        _splat(builder, state, _WORDS), builder.mul(builder.add(index, _constant(1)), _constant(int(GOLDEN)))
    )
    z = builder.mul(builder.xor(z, builder.lshr(z, _constant(30))), _constant(int(_MIX1)))
    z = builder.mul(builder.xor(z, builder.lshr(z, _constant(27))), _constant(int(_MIX2)))
    z = builder.xor(z, builder.lshr(z, _constant(31)))
    return builder.fmul(builder.uitofp(builder.lshr(z, _constant(11)), _DOUBLES), _constant(2.0**-53))


def _load_columns(builder, data, element, base, size, start):
    """Coordinates ``start .. start + 7`` of the LANES buckets at ``base + b size`` as 8 float64
    vectors (one per coordinate, lane b from bucket b): 8-wide row loads, transposed per 8 buckets."""
    block = ir.VectorType(_F64, BLOCK)
    halves = []
    for half in range(LANES // BLOCK):
        rows = []
        for r in range(BLOCK):
            offset = builder.add(builder.add(base, builder.mul(size, ir.Constant(_I64, half * BLOCK + r))), start)
            pointer = builder.bitcast(builder.gep(data, [offset]), ir.VectorType(element, BLOCK).as_pointer())
            row = builder.load(pointer, align=1)
            rows.append(row if element == _F64 else builder.fpext(row, block))
        for stage in _STAGES:
            for a, b, low, high in stage:
                pair = rows[a], rows[b]
                rows[a] = builder.shuffle_vector(*pair, ir.Constant(ir.VectorType(_I32, BLOCK), low))
                rows[b] = builder.shuffle_vector(*pair, ir.Constant(ir.VectorType(_I32, BLOCK), high))
        halves.append([rows[_COLUMN_OF.index(c)] for c in range(BLOCK)])
    whole = ir.Constant(ir.VectorType(_I32, LANES), list(range(LANES)))
    return [builder.shuffle_vector(low, high, whole) for low, high in zip(*halves, strict=True)]


def _advance(builder, fabs, value, pre, targets, sums, live):
    """One coordinate (``value``) of every lane into ``sums = (P, c_0, c_1)`` (see the module
    docstring); ``live``: the lanes with ``i < n_b``, or None when all are."""
    total, count0, count1 = sums
    added = builder.fadd(total, builder.fmul(builder.call(fabs, [value]), pre))
    below = [builder.fcmp_ordered("<=", added, target) for target in targets]
    if live is not None:
        added = builder.select(live, added, total)
        below = [builder.and_(live, hit) for hit in below]
    one, zero = _constant(1.0), _constant(0.0)
    counts = [
        builder.fadd(count, builder.select(hit, one, zero)) for count, hit in zip((count0, count1), below, strict=True)
    ]
    return (added, *counts)


def _picked_values(builder, data, element, base, size, count, n):
    """``x`` at coordinate ``min(c, n_b - 1)`` of each lane's bucket ``base + b size``, as float64
    (lane by lane: one scalar load each)."""
    inside = builder.fptosi(count, _WORDS)
    last = builder.sub(n, _constant(1))
    inside = builder.select(builder.icmp_signed("<", inside, last), inside, last)
    lane = ir.Constant(_WORDS, list(range(LANES)))
    offsets = builder.add(
        _splat(builder, base, _WORDS), builder.add(builder.mul(lane, _splat(builder, size, _WORDS)), inside)
    )
    values = ir.Constant(_DOUBLES, ir.Undefined)
    for b in range(LANES):
        position = ir.Constant(_I32, b)
        value = builder.load(builder.gep(data, [builder.extract_element(offsets, position)]))
        values = builder.insert_element(values, value if element == _F64 else builder.fpext(value, _F64), position)
    return values


def _vertex_codes(builder, u, mass, spread_scale, count, sign, n, shift):
    """Lane-wise vertex code ``index | negative << shift``: coordinate ``min(count, n - 1)`` with the
    sign of ``sign`` if ``u < mass``, else vertex ``min(int((u - mass) spread_scale), 2n - 1)`` of the
    2n (index ``v >> 1``, negative ``v & 1``); both computed and one taken, as in the scalar rule."""
    top = builder.sub(builder.mul(n, _constant(2)), _constant(1))
    spread = builder.fptosi(builder.fmul(builder.fsub(u, mass), spread_scale), _WORDS)
    spread = builder.select(builder.icmp_signed("<", spread, top), spread, top)
    last = builder.sub(n, _constant(1))
    inside = builder.fptosi(count, _WORDS)
    inside = builder.select(builder.icmp_signed("<", inside, last), inside, last)
    picked = builder.zext(builder.fcmp_ordered("<", u, mass), _WORDS)
    half, odd = builder.ashr(spread, _constant(1)), builder.and_(spread, _constant(1))
    negative_inside = builder.zext(builder.fcmp_ordered("<", sign, _constant(0.0)), _WORDS)
    index = builder.add(half, builder.mul(picked, builder.sub(inside, half)))
    negative = builder.add(odd, builder.mul(picked, builder.sub(negative_inside, odd)))
    return builder.or_(index, builder.shl(negative, shift))


def _store_codes(context, builder, array_type, array, pair, index, samples, lanes):
    """``codes[index_b + k] = pair[k]_b`` for lanes ``b < lanes`` and draws with ``index_b mod samples + k
    < samples``, narrowed to the array's unsigned integer type: one interleaved vector store when all
    16 buckets take both draws of 2, else lane by lane."""
    data = context.make_array(array_type)(context, builder, array).data
    code = ir.IntType(array_type.dtype.bitwidth)
    pair = [builder.trunc(codes, ir.VectorType(code, LANES)) for codes in pair]
    first = builder.extract_element(index, ir.Constant(_I32, 0))
    two = builder.icmp_signed("==", samples, ir.Constant(_I64, 2))
    full = builder.and_(two, builder.icmp_signed("==", lanes, ir.Constant(_I64, LANES)))
    with builder.if_else(full) as (interleaved, lane_by_lane):
        with interleaved:
            order = [k * LANES + b for b in range(LANES) for k in range(2)]
            both = builder.shuffle_vector(*pair, ir.Constant(ir.VectorType(_I32, 2 * LANES), order))
            pointer = builder.bitcast(builder.gep(data, [first]), ir.VectorType(code, 2 * LANES).as_pointer())
            builder.store(both, pointer, align=code.width // 8)
        with lane_by_lane:
            second = builder.icmp_signed("<", builder.add(builder.srem(first, samples), ir.Constant(_I64, 1)), samples)
            for b in range(LANES):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, b), lanes)):
                    at = builder.extract_element(index, ir.Constant(_I32, b))
                    builder.store(builder.extract_element(pair[0], ir.Constant(_I32, b)), builder.gep(data, [at]))
                    with builder.if_then(second):
                        value = builder.extract_element(pair[1], ir.Constant(_I32, b))
                        builder.store(value, builder.gep(data, [builder.add(at, ir.Constant(_I64, 1))]))


@llvm_intrinsic
def draw_lane_pair(typingctx, src, base, size, remaining, pre, nu_scaled, state, first, samples, shift, lanes, codes):
    """Draws ``first + b samples + k`` (k = 0, 1) of the LANES buckets ``src[base + b size :]``
    (bucket b has ``n_b = clip(remaining - b size, 0, size)`` coordinates; ``pre``, ``nu_scaled`` as
    in :func:`~mpicomp.compressors.cross_polytope.largest_bucket_norm`): their vertex codes into
    ``codes[first + b samples + k]`` for the first ``lanes`` buckets and the draws below ``samples``
    (``first mod samples + k < samples``); no bounds check."""
    floats = isinstance(src, types.Array) and src.dtype in (types.float32, types.float64) and src.layout == "C"
    codes_ok = isinstance(codes, types.Array) and codes.dtype in (types.uint8, types.uint16, types.uint32)
    if not (floats and codes_ok):
        return None

    def codegen(context, builder, signature, args):
        def scalar(j, kind):
            return context.cast(builder, args[j], signature.args[j], kind)

        base, size, remaining, first, per_bucket, shift, lanes = (
            scalar(j, types.int64) for j in (1, 2, 3, 7, 8, 9, 10)
        )
        pre, nu = scalar(4, types.float64), scalar(5, types.float64)
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        element = context.get_data_type(signature.args[0].dtype)
        fabs = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_DOUBLES, [_DOUBLES]), f"llvm.fabs.v{LANES}f64"
        )
        sqrt = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_DOUBLES, [_DOUBLES]), f"llvm.sqrt.v{LANES}f64"
        )

        lane = ir.Constant(_WORDS, list(range(LANES)))
        sizes = _splat(builder, size, _WORDS)
        n = builder.sub(_splat(builder, remaining, _WORDS), builder.mul(lane, sizes))
        n = builder.select(builder.icmp_signed("<", n, sizes), n, sizes)
        n = builder.select(builder.icmp_signed(">", n, _constant(0)), n, _constant(0))
        shortest = builder.extract_element(n, ir.Constant(_I32, LANES - 1))  # lengths never grow with b
        n_float = builder.sitofp(n, _DOUBLES)
        radius = builder.fmul(builder.call(sqrt, [n_float]), _splat(builder, nu, _DOUBLES))
        index = builder.add(_splat(builder, first, _WORDS), builder.mul(lane, _splat(builder, per_bucket, _WORDS)))
        state = scalar(6, types.uint64)
        uniforms = [_lane_uniforms(builder, state, draw) for draw in (index, builder.add(index, _constant(1)))]
        targets = [builder.fmul(u, radius) for u in uniforms]
        pres = _splat(builder, pre, _DOUBLES)

        slots = [cgutils.alloca_once_value(builder, _constant(0.0)) for _ in range(3)]
        blocks = builder.sdiv(builder.add(size, ir.Constant(_I64, BLOCK - 1)), ir.Constant(_I64, BLOCK))
        with cgutils.for_range(builder, blocks) as loop:
            start = builder.mul(loop.index, ir.Constant(_I64, BLOCK))
            columns = _load_columns(builder, data, element, base, size, start)
            whole = builder.icmp_signed("<=", builder.add(start, ir.Constant(_I64, BLOCK)), shortest)
            with builder.if_else(whole) as (all_live, some_dead):
                for masked, branch in ((False, all_live), (True, some_dead)):
                    with branch:
                        sums = tuple(builder.load(slot) for slot in slots)
                        for c, value in enumerate(columns):
                            i = builder.add(start, ir.Constant(_I64, c))
                            live = builder.icmp_signed("<", _splat(builder, i, _WORDS), n) if masked else None
                            sums = _advance(builder, fabs, value, pres, targets, sums, live)
                        for slot, value in zip(slots, sums, strict=True):
                            builder.store(value, slot)
        total, count0, count1 = (builder.load(slot) for slot in slots)
        sign0, sign1 = (_picked_values(builder, data, element, base, size, count, n) for count in (count0, count1))
        mass = builder.fdiv(total, radius)
        spread_scale = builder.fdiv(builder.fmul(_constant(2.0), n_float), builder.fsub(_constant(1.0), mass))
        shifts = _splat(builder, shift, _WORDS)
        pair = [
            _vertex_codes(builder, u, mass, spread_scale, hits, sign, n, shifts)
            for u, hits, sign in zip(uniforms, (count0, count1), (sign0, sign1), strict=True)
        ]
        _store_codes(context, builder, signature.args[11], args[11], pair, index, per_bucket, lanes)
        return context.get_dummy_value()

    signature = types.void(src, base, size, remaining, pre, nu_scaled, state, first, samples, shift, lanes, codes)
    return signature, codegen
