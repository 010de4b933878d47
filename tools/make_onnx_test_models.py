#!/usr/bin/env python3
"""Writes the tiny ONNX models the onnx and pointmae plugins' tests use, into plugins/onnx/test-data/
and plugins/pointmae/test-data/.

- `block_energy.onnx`: input `image` [N, 3, 32, 32] (fixed size), output `energy` [N, 1, 8, 8]: the
  channel mean of the squared input, averaged over 4x4 blocks. A known anomaly map for the
  onnx-scorer test, and a model that refuses every input size but 32x32.
- `sqrt.onnx`: input `image` [N, 3, H, W] (any size), output `root` = sqrt(input): NaN wherever
  the normalized input is negative, for the NaN-output test.
- `tiny_point_mae.onnx` (pointmae): the interface of the Point-MAE encoder that
  tools/export_point_mae.py writes (inputs `neighborhood` [1, G, k, 3] and `center` [1, G, 3], G and
  k dynamic; output `features` [1, G, 64]) with seeded random weights: a point-wise MLP 3-32-64 (ReLU)
  max-pooled over each group's k points, plus a linear embedding of the centre.
- `wrong_shape_point_mae.onnx` (pointmae): the same inputs, but `features` is [1, 64] (pooled over
  the groups too), for the wrong-output-shape test.

Needs: `pip install numpy onnx`. The files are small and committed; rerun only to change them.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "plugins" / "onnx" / "test-data"
POINTMAE_OUT = ROOT / "plugins" / "pointmae" / "test-data"


def save(graph, name: str, out: Path = OUT) -> None:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="anoflow make_onnx_test_models", ir_version=8
    )
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(model.SerializeToString())
    print(out / name)


def block_energy() -> None:
    nodes = [
        helper.make_node("Mul", ["image", "image"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["channel_mean"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["channel_mean"], ["energy"], kernel_shape=[4, 4], strides=[4, 4]),
    ]
    graph = helper.make_graph(
        nodes,
        "block_energy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["N", 1, 8, 8])],
    )
    save(graph, "block_energy.onnx")


def sqrt() -> None:
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["image"], ["root"])],
        "sqrt",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("root", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    save(graph, "sqrt.onnx")


def tiny_point_mae(name: str, pool_groups: bool) -> None:
    rng = np.random.RandomState(0)
    weights = {
        "w1": rng.randn(3, 32) * 10.0,  # patches are small (points minus their centre): scale them up
        "b1": rng.randn(32) * 0.1,
        "w2": rng.randn(32, 64) / np.sqrt(32),
        "b2": rng.randn(64) * 0.1,
        "wc": rng.randn(3, 64),
    }
    init = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("MatMul", ["neighborhood", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b2"], ["h2b"]),
        helper.make_node("ReduceMax", ["h2b"], ["pooled"], axes=[2], keepdims=0),  # over the k points
        helper.make_node("MatMul", ["center", "wc"], ["pos"]),
    ]
    if pool_groups:
        nodes += [
            helper.make_node("Add", ["pooled", "pos"], ["per_group"]),
            helper.make_node("ReduceMax", ["per_group"], ["features"], axes=[1], keepdims=0),
        ]
        out_shape = [1, 64]
    else:
        nodes.append(helper.make_node("Add", ["pooled", "pos"], ["features"]))
        out_shape = [1, "G", 64]
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info("neighborhood", TensorProto.FLOAT, [1, "G", "k", 3]),
            helper.make_tensor_value_info("center", TensorProto.FLOAT, [1, "G", 3]),
        ],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, out_shape)],
        initializer=init,
    )
    save(graph, f"{name}.onnx", POINTMAE_OUT)


if __name__ == "__main__":
    block_energy()
    sqrt()
    tiny_point_mae("tiny_point_mae", pool_groups=False)
    tiny_point_mae("wrong_shape_point_mae", pool_groups=True)
