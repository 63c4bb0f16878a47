"""Our pi3 network against the reference implementation, on the same random weights and images.

    python scripts/pi3_equivalence.py --reference-code PI3_CHECKOUT [--full] [--write-fixture]

PI3_CHECKOUT is a checkout of github.com/yyfz/Pi3 (BSD-2-Clause) outside this repository; its code is
imported from there and never copied here. For each case the reference network is built from its own
classes, every weight is perturbed with seeded noise (so no bias stays zero and no layer scale stays
at its initial value), the weights go through our loader (``reliev3r_ns.model.pi3.weights``) exactly
as a released ``model.safetensors`` would, and both networks run in fp32 on the same images. Printed:
the largest difference on local points, world points, confidence and poses, each over that output's
own largest magnitude (target: <= 1e-4).

Cases: a reduced network of pi3's structure (every kind of layer, a 6 x 6 position grid) on a
non-square set (the position embedding is resized) and on the exact grid (it is not); with --full the
released shape (959 M parameters, ~8 GB of memory for the two networks) on 2 views at 224 x 308.
--write-fixture stores the reduced case (fp16 weights, images, reference outputs) and the released
shape's tensor names and shapes under tests/fixtures/pi3_reference/, for the CI tests that have no
reference code and no network.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pi3_reference"
REDUCED = dict(dim=64, heads=1, encoder_depth=2, grid=6, trunk_depth=4, head_dim=64, head_heads=1, head_depth=2, camera_dim=32)
REDUCED_CASES = {"non_square_3_views": (3, 42, 56), "exact_grid_2_views": (2, 84, 84)}


def reduced_reference(Pi3):
    """pi3's Pi3 module with reduced widths and depths, assembled from the reference's own classes."""
    from pi3.models.dinov2.layers import Mlp
    from pi3.models.dinov2.layers.block import Block as DinoBlock
    from pi3.models.dinov2.models.vision_transformer import DinoVisionTransformer
    from pi3.models.layers.attention import FlashAttentionRope
    from pi3.models.layers.block import BlockRope
    from pi3.models.layers.camera_head import CameraHead
    from pi3.models.layers.pos_embed import PositionGetter, RoPE2D
    from pi3.models.layers.transformer_head import LinearPts3d, TransformerDecoder

    r = REDUCED
    model = Pi3.__new__(Pi3)
    nn.Module.__init__(model)
    model.encoder = DinoVisionTransformer(img_size=14 * r["grid"], patch_size=14, embed_dim=r["dim"], depth=r["encoder_depth"],
                                          num_heads=r["heads"], mlp_ratio=4, block_fn=DinoBlock, init_values=1.0, ffn_layer="mlp",
                                          block_chunks=0, num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)
    del model.encoder.mask_token
    model.patch_size = 14
    model.pos_type = "rope100"
    model.rope = RoPE2D(freq=100.0)
    model.position_getter = PositionGetter()
    model.decoder = nn.ModuleList([
        BlockRope(dim=r["dim"], num_heads=r["heads"], mlp_ratio=4, qkv_bias=True, proj_bias=True, ffn_bias=True, drop_path=0.0,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, ffn_layer=Mlp, init_values=0.01, qk_norm=True,
                  attn_class=FlashAttentionRope, rope=model.rope) for _ in range(r["trunk_depth"])])
    model.dec_embed_dim = r["dim"]
    model.patch_start_idx = 5
    model.register_token = nn.Parameter(torch.randn(1, 1, 5, r["dim"]) * 1e-6)
    decoder = partial(TransformerDecoder, in_dim=2 * r["dim"], dec_embed_dim=r["head_dim"], dec_num_heads=r["head_heads"],
                      depth=r["head_depth"], rope=model.rope)
    model.point_decoder = decoder(out_dim=r["head_dim"])
    model.point_head = LinearPts3d(patch_size=14, dec_embed_dim=r["head_dim"], output_dim=3)
    model.conf_decoder = copy.deepcopy(model.point_decoder)
    model.conf_head = LinearPts3d(patch_size=14, dec_embed_dim=r["head_dim"], output_dim=1)
    model.camera_decoder = decoder(out_dim=r["camera_dim"], use_checkpoint=False)
    model.camera_head = CameraHead(dim=r["camera_dim"])
    model.register_buffer("image_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    model.register_buffer("image_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    return model


@torch.no_grad()
def perturb(model: nn.Module, seed: int, scale: float = 0.02) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


@torch.no_grad()
def compare(reference, images: torch.Tensor, weights_source: str) -> dict:
    from reliev3r_ns.model.pi3.weights import network_from_reference_state

    ours = network_from_reference_state({k: v.clone() for k, v in reference.state_dict().items()}, weights_source).eval()
    started = time.perf_counter()
    expected = reference(images)
    reference_seconds = time.perf_counter() - started
    started = time.perf_counter()
    raw = ours.forward_raw(images)
    ours_seconds = time.perf_counter() - started
    world = torch.einsum("bvij,bvhwj->bvhwi", raw["cam_to_world"][..., :3, :3], raw["local_points"]) + raw["cam_to_world"][:, :, None, None, :3, 3]
    return {
        "views": int(images.shape[1]), "height": int(images.shape[3]), "width": int(images.shape[4]),
        "parameters": ours.num_parameters(),
        "relative_difference": {
            "local_points": relative_difference(raw["local_points"], expected["local_points"]),
            "world_points": relative_difference(world, expected["points"]),
            "confidence": relative_difference(raw["confidence_logit"], expected["conf"][..., 0]),
            "cam_to_world": relative_difference(raw["cam_to_world"], expected["camera_poses"]),
        },
        "seconds": {"reference": round(reference_seconds, 2), "ours": round(ours_seconds, 2)},
        "_expected": {k: v.numpy() for k, v in expected.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-code", type=Path, required=True, help="checkout of github.com/yyfz/Pi3 (outside this repository)")
    parser.add_argument("--full", action="store_true", help="also the released shape (959 M parameters, ~8 GB, a few minutes on 2 cores)")
    parser.add_argument("--write-fixture", action="store_true", help=f"write {FIXTURE.relative_to(ROOT)}")
    parser.add_argument("--reference-commit", default=None, help="the checkout's commit, where it is not a git work tree")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    code = args.reference_code.resolve()
    if code == ROOT or ROOT in code.parents:
        parser.error("the reference code must live outside this repository")
    sys.path.insert(0, str(code))
    from pi3.models.pi3 import Pi3

    torch.manual_seed(0)
    commit = args.reference_commit or subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    results = {"reference": {"code": "github.com/yyfz/Pi3", "commit": commit}, "target": 1e-4, "cases": {}}
    reference = reduced_reference(Pi3).eval()
    perturb(reference, seed=1)
    generator = torch.Generator().manual_seed(2)
    fixture_arrays = {}
    for name, (views, height, width) in REDUCED_CASES.items():
        images = torch.rand(1, views, 3, height, width, generator=generator)
        result = compare(reference, images, "reduced reference")
        expected = result.pop("_expected")
        results["cases"][f"reduced_{name}"] = result
        fixture_arrays[f"{name}/images"] = images.numpy()
        for key, value in expected.items():
            fixture_arrays[f"{name}/{key}"] = value
        print(f"reduced {name:>20}: " + ", ".join(f"{k} {v:.1e}" for k, v in result["relative_difference"].items()))

    if args.write_fixture:
        from safetensors.torch import save_file

        FIXTURE.mkdir(parents=True, exist_ok=True)
        # The reference's outputs were computed with the fp32 weights: store those bits exactly (fp32).
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(FIXTURE / "reduced_weights.safetensors"))
        np.savez_compressed(FIXTURE / "reduced_cases.npz", **fixture_arrays)

    if args.full:
        torch.manual_seed(3)
        full = Pi3().eval()
        perturb(full, seed=4, scale=0.005)
        if args.write_fixture:
            layout = {k: list(v.shape) for k, v in full.state_dict().items()}
            (FIXTURE / "released_layout.json").write_text(json.dumps(layout, indent=0) + "\n")
        images = torch.rand(1, 2, 3, 224, 308, generator=generator)
        result = compare(full, images, "released-shape reference")
        result.pop("_expected")
        results["cases"]["released_shape_2_views_224x308"] = result
        print(f"released shape, 2 views 224x308 ({result['parameters'] / 1e6:.0f} M): "
              + ", ".join(f"{k} {v:.1e}" for k, v in result["relative_difference"].items()))
    worst = max(v for case in results["cases"].values() for v in case["relative_difference"].values())
    results["worst_relative_difference"] = worst
    results["passes"] = bool(worst <= results["target"])
    print(f"worst relative difference {worst:.1e} (target <= 1e-4): {'PASS' if results['passes'] else 'FAIL'}")
    if args.write_fixture:
        record = {**results, "command": "python scripts/pi3_equivalence.py --reference-code PI3_CHECKOUT --full --write-fixture",
                  "reduced_shape": REDUCED, "cases_shapes": REDUCED_CASES}
        (FIXTURE / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    if not results["passes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
