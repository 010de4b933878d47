#!/usr/bin/env python3
"""Exports a Point-MAE encoder (Pang et al., ECCV 2022) to ONNX, for users WITH internet and torch.

The exported graph takes point patches that anoflow's `point-mae-features` stage groups in Rust
(`anoflow-pointops`: farthest point sampling of G centres, k nearest neighbours per centre, each
patch relative to its centre) and returns one feature per patch:

    inputs:  neighborhood [1, G, k, 3]   (float32, points minus their centre)
             center       [1, G, 3]      (float32)
    output:  features     [1, G, 1152]   (LayerNorm-ed outputs of blocks 4, 8 and 12, concatenated,
                                          as M3DM reads Point-MAE)

G and k are dynamic axes (M3DM uses G = 1024 groups of k = 128 points). These names are the
interface `point-mae-features` checks (plugins/pointmae/src/encoder.rs); keep them in step.

With --checkpoint, the model gets the entry `point_mae` (named after --out's file) in the
models/manifest.yaml beside --out, so pipelines can say `model: point_mae`. A --random-init
export gets no manifest entry: pass its path to the stage instead.

Architecture (Point-MAE's pre-training encoder `MAE_encoder`): a mini-PointNet patch embedding
(Conv1d 3-128-256, max-pool, concat, Conv1d 512-512-384, max-pool), a positional MLP on the
centres (3-128-384, GELU), 12 pre-norm transformer blocks (384 wide, 6 heads, MLP ratio 4, qkv
without bias) with the positional embedding added before every block, and a final LayerNorm.
M3DM's feature extractor adds a class token with a randomly initialised positional embedding that
is not in the checkpoint; it is left out here, so the features depend on the checkpoint only.

Weights: download Point-MAE's pre-trained checkpoint (`pretrain.pth`, from the Point-MAE project's
releases; M3DM redistributes it as `pointmae_pretrain.pth`) and pass it with `--checkpoint`.
`--random-init` exports untrained weights, to test a pipeline end to end without the download.

Needs: `pip install torch onnx` (+ `onnxruntime` for the check against torch).

Usage:
    python3 tools/export_point_mae.py --checkpoint pointmae_pretrain.pth [--out models/point_mae.onnx]
    python3 tools/export_point_mae.py --random-init --out /tmp/point_mae_random.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from prepare_default_model import update_manifest  # noqa: E402
FETCH_BLOCKS = (3, 7, 11)


class PatchEmbed(nn.Module):
    """Point-MAE's `Encoder`: a mini-PointNet over each patch."""

    def __init__(self, dim: int = 384):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, dim, 1))
        self.dim = dim

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, n, _ = groups.shape
        x = groups.reshape(b * g, n, 3).transpose(2, 1)
        f = self.first_conv(x)
        glob = torch.max(f, dim=2, keepdim=True)[0]
        f = torch.cat([glob.expand(-1, -1, n), f], dim=1)
        f = self.second_conv(f)
        return torch.max(f, dim=2)[0].reshape(b, g, self.dim)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Blocks(nn.Module):
    """Keeps Point-MAE's `blocks.blocks.<i>` parameter names."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])


class PointMaeEncoder(nn.Module):
    def __init__(self, dim: int = 384, depth: int = 12, heads: int = 6):
        super().__init__()
        self.encoder = PatchEmbed(dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = Blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, neighborhood: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        x = self.encoder(neighborhood)
        pos = self.pos_embed(center)
        fetched = []
        for i, block in enumerate(self.blocks.blocks):
            x = block(x + pos)
            if i in FETCH_BLOCKS:
                fetched.append(self.norm(x))
        return torch.cat(fetched, dim=-1)


def load_checkpoint(model: PointMaeEncoder, path: Path) -> None:
    ckpt = torch.load(path, map_location="cpu")
    state = ckpt.get("base_model", ckpt.get("model", ckpt))
    prefix = "MAE_encoder."
    mapped = {}
    for key, value in state.items():
        key = key.replace("module.", "")
        if key.startswith(prefix):
            mapped[key[len(prefix):]] = value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing:
        sys.exit(f"{path}: the checkpoint lacks {len(missing)} encoder tensors, e.g. {missing[:5]}; "
                 "expected Point-MAE's pre-training checkpoint (keys `MAE_encoder.*` under `base_model`)")
    if unexpected:
        print(f"note: ignored {len(unexpected)} tensors not in the encoder, e.g. {unexpected[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="Point-MAE pre-training checkpoint (.pth)")
    src.add_argument("--random-init", action="store_true", help="untrained weights (pipeline smoke tests only)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "point_mae.onnx")
    ap.add_argument("--groups", type=int, default=1024, help="G used for the export trace and the check")
    ap.add_argument("--group-size", type=int, default=128, help="k used for the export trace and the check")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = PointMaeEncoder()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model.eval()

    g, k = args.groups, args.group_size
    neighborhood = torch.randn(1, g, k, 3) * 0.05
    center = torch.randn(1, g, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".onnx.tmp")
    with torch.no_grad():
        expected = model(neighborhood, center).numpy()
        kwargs = dict(
            input_names=["neighborhood", "center"], output_names=["features"],
            dynamic_axes={"neighborhood": {1: "groups", 2: "group_size"}, "center": {1: "groups"}, "features": {1: "groups"}},
            opset_version=17,
        )
        try:
            torch.onnx.export(model, (neighborhood, center), str(tmp), dynamo=False, **kwargs)
        except TypeError:  # torch without the `dynamo` switch
            torch.onnx.export(model, (neighborhood, center), str(tmp), **kwargs)
    tmp.replace(args.out)  # atomic: a half-written model never carries the final name

    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipped the check against torch")
    else:
        sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
        got = sess.run(["features"], {"neighborhood": neighborhood.numpy(), "center": center.numpy()})[0]
        err = float(np.abs(got - expected).max())
        print(f"onnxruntime vs torch: max abs difference {err:.2e}")
        if err > 1e-3:
            sys.exit("the exported model disagrees with torch")

    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    channels = 384 * len(FETCH_BLOCKS)
    size = f"{args.out.stat().st_size / 1e6:.1f} MB, sha256 {sha[:12]}..."
    if args.random_init:
        print(f"wrote {args.out} ({size}); random weights: no manifest entry, give the stage its path")
        return
    name = args.out.stem
    block = "\n".join([
        f"  - name: {name}",
        f"    file: {args.out.name}",
        f"    sha256: {sha}",
        f"    source: Point-MAE pre-training checkpoint {args.checkpoint.name}, exported by tools/export_point_mae.py "
        f"with torch {torch.__version__}",
        "    architecture: Point-MAE encoder (mini-PointNet patch embedding, 12 blocks, 384 wide), LayerNorm-ed "
        "outputs of blocks 4, 8 and 12 concatenated (M3DM)",
        "    input: {name: neighborhood}",
        "    default_outputs: [features]",
        "    outputs:",
        f"      - {{name: features, channels: {channels}}}",
    ]) + "\n"
    manifest = args.out.parent / "manifest.yaml"
    update_manifest(manifest, {"name": name}, block)
    print(f"wrote {args.out} ({size}) and its entry `{name}` in {manifest}")


if __name__ == "__main__":
    main()
