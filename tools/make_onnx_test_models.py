#!/usr/bin/env python3
"""Writes the tiny ONNX models the onnx plugin's tests use, into plugins/onnx/test-data/.

- `block_energy.onnx`: input `image` [N, 3, 32, 32] (fixed size), output `energy` [N, 1, 8, 8]: the
  channel mean of the squared input, averaged over 4x4 blocks. A known anomaly map for the
  onnx-scorer test, and a model that refuses every input size but 32x32.
- `sqrt.onnx`: input `image` [N, 3, H, W] (any size), output `root` = sqrt(input): NaN wherever
  the normalized input is negative, for the NaN-output test.

Needs: `pip install numpy onnx`. The files are small and committed; rerun only to change them.
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parent.parent / "plugins" / "onnx" / "test-data"


def save(graph, name: str) -> None:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="anoflow make_onnx_test_models", ir_version=8
    )
    onnx.checker.check_model(model)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_bytes(model.SerializeToString())
    print(OUT / name)


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


if __name__ == "__main__":
    block_energy()
    sqrt()
