"""numba intrinsics for the byte-level kernels of the selective bslz4 decoder and the arena's copy.

Unaligned little-endian 64-bit loads and stores into uint8 arrays, 32-byte copies and splats,
and the CPU's popcount and trailing-zero count: numba's own array code would go byte by byte or add bounds and
wrap-around checks on the hot loops of :mod:`stream.lz4_block_kernel` and
:mod:`stream.bitplane_kernel`. Non-temporal 32-byte copies, their fence and an array's
address for :mod:`stream.streaming_copy`. Byte indices are ``uint64``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# uint64 constants for the kernels that index with uint64 (``uint64 op int64`` is float64 in
# numba): one set, imported by the LZ4, bit-plane and driver modules
U0 = np.uint64(0)
U1 = np.uint64(1)
U2 = np.uint64(2)
U3 = np.uint64(3)
U4 = np.uint64(4)
U7 = np.uint64(7)
U8 = np.uint64(8)
U15 = np.uint64(15)
U32 = np.uint64(32)
U255 = np.uint64(255)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``: one ``popcnt`` instruction on x86-64)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def trailing_zeros64(typingctx, x):
    """Position of the lowest set bit of a nonzero uint64 (LLVM ``cttz``: one ``tzcnt``/``bsf``);
    undefined for 0, which the callers never pass."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@intrinsic
def load_u64(typingctx, arr, byte_index):
    """8 bytes of a uint8 array from ``byte_index`` as one native (little-endian) uint64.

    Unaligned and unchecked: the caller has checked ``byte_index + 8 <= arr.size``.
    """
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and byte_index == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(arr, byte_index), codegen


@intrinsic
def store_u64(typingctx, arr, byte_index, value):
    """Write ``value`` as 8 native-order bytes of a uint8 array at ``byte_index``.

    Unaligned and unchecked: the caller has checked ``byte_index + 8 <= arr.size``.
    """
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and byte_index == types.uint64
            and value == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        builder.store(args[2], builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(arr, byte_index, value), codegen


@intrinsic
def copy32(typingctx, dst, to, src, frm):
    """Copy 32 bytes ``src[frm:frm + 32]`` to ``dst[to:to + 32]`` as one unaligned vector load and
    store (two 16-byte or one 32-byte move on x86-64). Unchecked: the caller has checked both
    ranges; when ``dst is src`` the ranges must not overlap (or the source must lie 32+ bytes
    before the destination)."""
    return _copy32_typed(dst, to, src, frm, nontemporal=False)


@intrinsic
def stream32(typingctx, dst, to, src, frm):
    """:func:`copy32` with a non-temporal store (around the cache: ``vmovntps``); ``dst`` + ``to``
    must be 32-byte aligned. Such stores are weakly ordered: end a run of them with
    :func:`store_fence` before the bytes are handed to another thread or process."""
    return _copy32_typed(dst, to, src, frm, nontemporal=True)


def _copy32_typed(dst, to, src, frm, *, nontemporal: bool):
    """Signature and code of a 32-byte copy between uint8 arrays (None: not these types)."""
    ok = all(isinstance(a, types.Array) and a.dtype == types.uint8 for a in (dst, src))
    if not (ok and to == types.uint64 and frm == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.IntType(64), 4)
        d = context.make_array(signature.args[0])(context, builder, args[0])
        s_ = context.make_array(signature.args[2])(context, builder, args[2])
        v = builder.load(builder.bitcast(builder.gep(s_.data, [args[3]]), vec.as_pointer()), align=1)
        store = builder.store(v, builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer()),
                              align=32 if nontemporal else 1)
        if nontemporal:
            store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(dst, to, src, frm), codegen


@intrinsic
def store_fence(typingctx):
    """``sfence``: orders the non-temporal stores before it ahead of any later store. (LLVM
    lowers a ``seq_cst`` fence to a locked add on x86, which the manuals do not promise to
    drain the write-combining buffers those stores go through.)"""

    def codegen(context, builder, signature, args):
        sfence = builder.module.declare_intrinsic("llvm.x86.sse.sfence", fnty=ir.FunctionType(ir.VoidType(), []))
        builder.call(sfence, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def address_of(typingctx, arr):
    """The address of a uint8 array's first byte, as a uint64 (to align stores)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))

    return types.uint64(arr), codegen


@intrinsic
def splat32(typingctx, dst, to, value):
    """Write the uint64 ``value`` 4 times (32 bytes) at ``dst[to]``; unaligned, unchecked."""
    if not (isinstance(dst, types.Array) and dst.dtype == types.uint8 and to == types.uint64
            and value == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.IntType(64), 4)
        d = context.make_array(signature.args[0])(context, builder, args[0])
        v = ir.Constant(vec, ir.Undefined)
        for i in range(4):
            v = builder.insert_element(v, args[2], ir.Constant(ir.IntType(32), i))
        builder.store(v, builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(dst, to, value), codegen
