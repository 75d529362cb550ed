"""The per-row INT8 rewrite of weight MatMuls (``serving/build/row_int8.py``), on small graphs run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from serving.build.row_int8 import quantize_rows

K, N = 64, 48


def _graph(weight: np.ndarray, *, tied: bool = False):
    """x [rows, K] -> x @ weight (node "proj") and x @ weight * 2 (node "kept"); with ``tied`` the weight is also
    read by a Gather, as a tied embedding is."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
        helper.make_node("MatMul", ["x", "w"], ["z0"], name="kept"),
        helper.make_node("Add", ["z0", "z0"], ["z"], name="double"),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "z")]
    if tied:
        nodes.append(helper.make_node("Gather", ["w", "index"], ["row"], name="lookup", axis=0))
        outputs.append(helper.make_tensor_value_info("row", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        outputs,
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([3], np.int64), "index")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((K, N)).astype(np.float32) * 0.1


def test_a_rewritten_matmul_gives_the_fp32_product_within_int8_rounding(weight):
    model = _graph(weight)
    quantize_rows(model, ["proj"])
    ops = [node.op_type for node in model.graph.node]
    assert "MatMulIntegerToFloat" in ops and ops.count("MatMul") == 1, ops  # "kept" stays fp32
    x = np.random.default_rng(4).standard_normal((5, K)).astype(np.float32)
    y, z = _session(model).run(None, {"x": x})
    exact = x @ weight
    assert np.allclose(z, 2 * exact, atol=1e-5)  # untouched
    error = np.abs(y - exact).max() / np.abs(exact).max()
    assert 0 < error < 0.02, error  # quantized (not exact), and close


def test_a_rows_numbers_do_not_depend_on_the_rows_beside_it(weight):
    """What per-row scales are for: a row beside a row 1000x larger comes out as it does alone (one scale per
    matrix would flatten it to a few levels)."""
    model = _graph(weight)
    quantize_rows(model, ["proj"])
    session = _session(model)
    row = np.random.default_rng(5).standard_normal((1, K)).astype(np.float32)
    loud = 1000 * np.random.default_rng(6).standard_normal((1, K)).astype(np.float32)
    alone = session.run(None, {"x": np.concatenate([row, row])})[0][0]
    beside = session.run(None, {"x": np.concatenate([row, loud])})[0][0]
    assert np.allclose(alone, beside, atol=1e-6)
    assert np.abs(alone - (row @ weight)[0]).max() < 0.02 * np.abs(row @ weight).max()


def test_the_worst_case_product_is_exact_on_this_cpu_whatever_its_int8_kernel():
    """Rows and weights at full scale, all positive: every pair of u8 x s8 products is as large as it can be. The
    weights must take 7 bits (on any CPU), and the product must come out exact (on a CPU without VNNI, where 8-bit
    weights saturate the kernel's 16-bit sums: 1.6 instead of 204.8 here)."""
    from onnx import numpy_helper

    model = _graph(np.full((K, N), 0.1, np.float32))
    quantize_rows(model, ["proj"])
    stored = [numpy_helper.to_array(init) for init in model.graph.initializer if init.name.endswith("/weight_s8")]
    assert [int(np.abs(w.astype(np.int32)).max()) for w in stored] == [63]
    x = np.full((3, K), 32.0, np.float32)
    y, _ = _session(model).run(None, {"x": x})
    assert np.allclose(y, x @ np.full((K, N), 0.1, np.float32), rtol=1e-5), y[0, :4]


def test_a_weight_another_node_reads_stays_and_a_zero_row_stays_zero(weight):
    model = _graph(weight, tied=True)
    quantize_rows(model, ["proj", "kept"])
    assert "w" in {init.name for init in model.graph.initializer}  # the lookup still reads it in fp32
    x = np.zeros((2, K), np.float32)
    y, _, row = _session(model).run(None, {"x": x})
    assert np.array_equal(y, np.zeros((2, N), np.float32))  # no 0/0 from a zero scale
    assert np.array_equal(row, weight[[3]])


def test_only_a_matmul_by_a_weight_is_rewritten(weight):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="activations")],
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 4]) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="activations is not a MatMul by a 2-D fp32 initializer"):
        quantize_rows(model, ["activations"])
    with pytest.raises(ValueError, match="no node named"):
        quantize_rows(_graph(weight), ["projection"])
    newer = _graph(weight)
    newer.opset_import[0].version = 18  # ReduceMax's axes became an input
    with pytest.raises(ValueError, match="opset 18: only graphs of opset 17 or older"):
        quantize_rows(newer, ["proj"])
