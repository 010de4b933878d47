#!/usr/bin/env python3
"""Exports the paper-grade backbones to ONNX, for users WITH internet and torch.

- `wide_resnet50`: torchvision's WideResNet-50-2 (ImageNet), outputs `layer2` (512 ch, stride 8)
  and `layer3` (1024 ch, stride 16), as PatchCore uses them; any input size.
- `dinov2_vits14`: DINO-v2 ViT-S/14 (torch hub), output `patch_tokens` (384 ch, stride 14): the
  normalized patch tokens reshaped to a [N, 384, H/14, W/14] feature map; fixed input size
  (default 224, `--dino-size` a multiple of 14).

Each model is written to models/<name>.onnx and gets an entry in models/manifest.yaml (sha256,
outputs, input size, ImageNet normalization), so pipelines say `model: wide_resnet50`.
When onnxruntime is installed, each export is checked against torch on a random input.

Needs: `pip install torch torchvision onnx` (+ `onnxruntime` for the check), and internet the first
time (torchvision and torch hub download the weights). Nothing here runs in anoflow's CI.

Usage: python3 tools/export_torch_models.py [wide_resnet50] [dinov2_vits14] [--dino-size 224]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_default_model import MEAN, STD, update_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class WideResNetLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        import torchvision

        weights = torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1
        self.net = torchvision.models.wide_resnet50_2(weights=weights).eval()

    def forward(self, image):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(image))))
        layer2 = n.layer2(n.layer1(x))
        return layer2, n.layer3(layer2)


class DinoPatchTokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.hub.load("facebookresearch/dinov2", "dinov2_vits14").eval()

    def forward(self, image):
        tokens = self.net.forward_features(image)["x_norm_patchtokens"]  # [N, T, C]
        n, _, c = tokens.shape
        h, w = image.shape[2] // 14, image.shape[3] // 14
        return tokens.transpose(1, 2).reshape(n, c, h, w)


def export(name: str, module: torch.nn.Module, size: int, outputs: list[tuple[str, int, int]], dynamic: bool) -> None:
    path = ROOT / "models" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randn(1, 3, size, size)
    names = [o[0] for o in outputs]
    axes = {"image": {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}}
    axes.update({o: {0: "batch"} for o in names})
    kwargs = dict(input_names=["image"], output_names=names, dynamic_axes=axes, opset_version=17)
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        try:
            torch.onnx.export(module, (dummy,), str(tmp), dynamo=False, **kwargs)
        except TypeError:  # torch without the `dynamo` switch
            torch.onnx.export(module, (dummy,), str(tmp), **kwargs)
        expected = module(dummy)
    tmp.replace(path)
    check_with_onnxruntime(path, dummy, expected if isinstance(expected, tuple) else (expected,), names)
    update_manifest(
        ROOT / "models" / "manifest.yaml",
        {
            "name": name,
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "source": f"exported by tools/export_torch_models.py with torch {torch.__version__}",
            "input_name": "image",
            "input_size": size,
            "dynamic_size": dynamic,
            "mean": MEAN,
            "std": STD,
            "default_outputs": names,
            "outputs": outputs,
        },
    )
    print(path)


def check_with_onnxruntime(path: Path, dummy, expected, names) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: export not checked", file=sys.stderr)
        return
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(names, {"image": dummy.numpy()})
    for name, g, e in zip(names, got, expected):
        diff = float(np.abs(g - e.numpy()).max())
        if diff > 1e-3:
            raise SystemExit(f"{path}: output {name} differs from torch by {diff}")
        print(f"{path.name}: {name} {tuple(g.shape)} matches torch (max diff {diff:.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["wide_resnet50", "dinov2_vits14"])
    ap.add_argument("--dino-size", type=int, default=224, help="DINO-v2 input size (a multiple of 14)")
    args = ap.parse_args()
    for name in args.models:
        if name == "wide_resnet50":
            export(name, WideResNetLayers().eval(), 224, [("layer2", 512, 8), ("layer3", 1024, 16)], True)
        elif name == "dinov2_vits14":
            if args.dino_size % 14:
                raise SystemExit(f"--dino-size must be a multiple of 14, got {args.dino_size}")
            export(name, DinoPatchTokens().eval(), args.dino_size, [("patch_tokens", 384, 14)], False)
        else:
            raise SystemExit(f"unknown model {name}; expected wide_resnet50 or dinov2_vits14")


if __name__ == "__main__":
    main()
