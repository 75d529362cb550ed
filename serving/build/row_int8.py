"""INT8 weight MatMuls with activations quantized per row, as CTranslate2 runs its int8 models.

A MatMul of an activation by a constant fp32 weight becomes: the activation's rows (its last axis) quantized to
8 bits, each with its own scale (its largest magnitude / 127), multiplied as unsigned INT8 (the row plus 128, zero
point 128) against the weight quantized per output column to 7 bits (``WEIGHT_LEVELS`` says why), and the INT8
products scaled back by the row's and the column's scales (``MatMulIntegerToFloat``, then one ``Mul``).

Why per row: one scale per activation matrix (onnxruntime's dynamic quantization) makes each row's numbers depend
on the other rows, so a window would decode differently beside other windows than alone and beams would be scored
against each other's numbers. ``MatMulNBits`` quantizes activations per row too, but on this repository's machine
its INT8 kernel ran the decoder's vocabulary projection for 40 rows (8 windows x 5 beams) no faster than fp32
(12.6 ms, fp32 14.1 ms), where onnxruntime's u8s8 GEMM (the one dynamic quantization uses) took 3.9 ms with the
per-row scales. Unsigned activations, not signed: onnxruntime has no fast s8s8 kernel on x86 (112 ms there).
The quantizing costs eight small nodes per MatMul, which outweigh the gain on the smaller MatMuls
(``serving/build/export.py`` says which MatMuls take it).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

_MS_DOMAIN = "com.microsoft"
# Weights take 7 bits, not 8, so that the u8s8 product is exact on every x86 CPU. Without VNNI (AVX2, and AVX-512
# before Cascade Lake: AMD EPYC up to Zen 3, the CPUs of g5 and g6 instances), onnxruntime's u8s8 kernel adds pairs
# of u8 x s8 products in 16 bits, which saturate: 255 x 127 x 2 overflows 32767, 255 x 63 x 2 does not. On an AVX2
# EPYC, a random u8s8 product with full-range weights was off by 18%, and exact with 7 bits. VNNI's kernel adds in
# 32 bits, exact either way, so this costs one bit of each weight there.
WEIGHT_BITS = 7
WEIGHT_LEVELS = 2 ** (WEIGHT_BITS - 1) - 1  # 63
# Rows of zeros would have a zero scale; any row's largest magnitude is at least this.
_TINY = 1e-12


def quantize_rows(model: onnx.ModelProto, nodes: Collection[str]) -> None:
    """Rewrite, in ``model``, the MatMuls named in ``nodes`` as above; each must multiply by a 2-D fp32
    initializer. An initializer stays where another node still reads it (a tied embedding's lookup)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if missing := set(nodes) - {node.name for node in graph.node}:
        raise ValueError(f"no node named {sorted(missing)}")
    if not any(opset.domain == _MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18; the export writes opset 17
        raise ValueError(f"opset {opset}: only graphs of opset 17 or older are rewritten")
    weights = {init.name: init for init in graph.initializer}
    constants: dict[str, np.ndarray] = {
        "row_int8/127": np.array(127.0, np.float32),
        "row_int8/128": np.array(128.0, np.float32),
        "row_int8/tiny": np.array(_TINY, np.float32),
        "row_int8/one": np.array(1.0, np.float32),
        "row_int8/zero_point": np.array(128, np.uint8),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name not in nodes:
            rewritten.append(node)
            continue
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
            raise ValueError(f"{node.name} is not a MatMul by a 2-D fp32 initializer")
        p = f"{node.name}/row_int8"  # every name this rewrite adds starts with it
        values = numpy_helper.to_array(weight).astype(np.float32)
        column_scale = np.maximum(np.abs(values).max(axis=0), _TINY) / WEIGHT_LEVELS
        column_int8 = np.clip(np.round(values / column_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        graph.initializer.extend([
            numpy_helper.from_array(column_int8, f"{p}/weight_s8"),
            numpy_helper.from_array(column_scale.astype(np.float32), f"{p}/column_scale"),
        ])  # fmt: skip
        rewritten += [
            helper.make_node("Abs", [node.input[0]], [f"{p}/abs"], f"{p}/Abs"),
            helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/max"], f"{p}/ReduceMax", keepdims=1, axes=[-1]),
            helper.make_node("Max", [f"{p}/max", "row_int8/tiny"], [f"{p}/top"], f"{p}/Max"),
            helper.make_node("Div", [f"{p}/top", "row_int8/127"], [f"{p}/row_scale"], f"{p}/Scale"),
            helper.make_node("Div", [node.input[0], f"{p}/row_scale"], [f"{p}/scaled"], f"{p}/Div"),
            helper.make_node("Round", [f"{p}/scaled"], [f"{p}/rounded"], f"{p}/Round"),
            helper.make_node("Add", [f"{p}/rounded", "row_int8/128"], [f"{p}/shifted"], f"{p}/Add"),
            helper.make_node("Cast", [f"{p}/shifted"], [f"{p}/rows_u8"], f"{p}/Cast", to=TensorProto.UINT8),
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}/rows_u8", f"{p}/weight_s8", "row_int8/one", f"{p}/column_scale", "row_int8/zero_point"],
                [f"{p}/product"],
                f"{p}/MatMulIntegerToFloat",
                domain=_MS_DOMAIN,
            ),
            helper.make_node("Mul", [f"{p}/product", f"{p}/row_scale"], list(node.output), f"{p}/Mul"),
        ]
    del graph.node[:]
    graph.node.extend(rewritten)
    read = {name for node in graph.node for name in node.input}
    for unused in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(unused)
