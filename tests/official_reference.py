"""Functional reference of the authors' SparseInst forward pass.

Everything here works on a plain state dict in the authors' checkpoint layout
(keys prefixed ``backbone.``, ``encoder.``, ``decoder.``), using only
``torch.nn.functional`` and ``torchvision.ops`` calls, so that tests can check
the project's own modules (after key conversion) against it.

* :func:`official_layout` lists key -> shape in checkpoint order.
* :func:`random_official_state_dict` fills a layout with distinct, numerically
  tame random values.
* :func:`official_forward` runs backbone, instance context encoder and IAM
  decoder and returns (class logits, objectness logits, mask logits).
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import deform_conv2d

Layout = dict[str, tuple[int, ...]]
StateDict = dict[str, Tensor]

_DEPTHS: dict[str, tuple[int, ...]] = {"r50": (3, 4, 6, 3), "r101": (3, 4, 23, 3), "r50vd": (3, 4, 6, 3)}
_WIDTHS = (64, 128, 256, 512)  # bottleneck width per stage; output is 4x
_PPM_SIZES = (1, 2, 3, 6)
_IAMS = ("sigmoid", "softmax", "group", "group_softmax")


def _bn(out: Layout, prefix: str, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{name}"] = (c,)


def _backbone_layout(arch: str, dcn: bool) -> Layout:
    out: Layout = {}
    vd = arch == "r50vd"
    if vd:
        out["backbone.conv1.0.weight"] = (32, 3, 3, 3)
        _bn(out, "backbone.conv1.1", 32)
        out["backbone.conv1.3.weight"] = (32, 32, 3, 3)
        _bn(out, "backbone.conv1.4", 32)
        out["backbone.conv1.6.weight"] = (64, 32, 3, 3)
        _bn(out, "backbone.bn1", 64)
    else:
        out["backbone.stem.conv1.weight"] = (64, 3, 7, 7)
        _bn(out, "backbone.stem.conv1.norm", 64)
    cin = 64
    for s, (n, w) in enumerate(zip(_DEPTHS[arch], _WIDTHS)):
        deform = dcn and s >= 2
        for i in range(n):
            p = f"backbone.layer{s + 1}.{i}" if vd else f"backbone.res{s + 2}.{i}"
            bn = (lambda k: f"{p}.bn{k}") if vd else (lambda k: f"{p}.conv{k}.norm")
            if i == 0 and not vd:
                out[f"{p}.shortcut.weight"] = (4 * w, cin, 1, 1)
                _bn(out, f"{p}.shortcut.norm", 4 * w)
            out[f"{p}.conv1.weight"] = (w, cin, 1, 1)
            _bn(out, bn(1), w)
            if deform:
                out[f"{p}.conv2_offset.weight"] = (18, w, 3, 3)
                out[f"{p}.conv2_offset.bias"] = (18,)
            out[f"{p}.conv2.weight"] = (w, w, 3, 3)
            _bn(out, bn(2), w)
            out[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
            _bn(out, bn(3), 4 * w)
            if i == 0 and vd:
                out[f"{p}.downsample.1.weight"] = (4 * w, cin, 1, 1)
                _bn(out, f"{p}.downsample.2", 4 * w)
            cin = 4 * w
    return out


def official_layout(
    arch: str = "r50",
    *,
    dcn: bool = False,
    iam: str = "group",
    groups: int = 4,
    num_classes: int = 80,
    num_instances: int = 100,
    kernel_dim: int = 128,
    dim: int = 256,
) -> Layout:
    """Key -> shape of an authors' checkpoint, in state-dict order."""
    if arch not in _DEPTHS or iam not in _IAMS:
        raise ValueError(f"unknown arch/iam: {arch!r}, {iam!r}")
    out = _backbone_layout(arch, dcn)
    for i, c in enumerate((2048, 1024, 512)):
        out[f"encoder.fpn_laterals.{i}.weight"] = (dim, c, 1, 1)
        out[f"encoder.fpn_laterals.{i}.bias"] = (dim,)
    for i in range(3):
        out[f"encoder.fpn_outputs.{i}.weight"] = (dim, dim, 3, 3)
        out[f"encoder.fpn_outputs.{i}.bias"] = (dim,)
    for i in range(len(_PPM_SIZES)):
        out[f"encoder.ppm.stages.{i}.1.weight"] = (dim // 4, dim, 1, 1)
        out[f"encoder.ppm.stages.{i}.1.bias"] = (dim // 4,)
    out["encoder.ppm.bottleneck.weight"] = (dim, 2 * dim, 1, 1)
    out["encoder.ppm.bottleneck.bias"] = (dim,)
    out["encoder.fusion.weight"] = (dim, 3 * dim, 1, 1)
    out["encoder.fusion.bias"] = (dim,)

    g = groups if iam.startswith("group") else 1
    ib, mb = "decoder.inst_branch", "decoder.mask_branch"
    if iam.endswith("softmax"):
        # a parameter held directly by the branch: saved before its sub-modules
        out[f"{ib}.softmax_bias"] = (1,)
    for i in range(4):
        out[f"{ib}.inst_convs.{2 * i}.weight"] = (dim, dim + 2 if i == 0 else dim, 3, 3)
        out[f"{ib}.inst_convs.{2 * i}.bias"] = (dim,)
    out[f"{ib}.iam_conv.weight"] = (num_instances * g, dim // g, 3, 3)
    out[f"{ib}.iam_conv.bias"] = (num_instances * g,)
    if g > 1:
        out[f"{ib}.fc.weight"] = (g * dim, g * dim)
        out[f"{ib}.fc.bias"] = (g * dim,)
    for name, n_out in (("cls_score", num_classes), ("mask_kernel", kernel_dim), ("objectness", 1)):
        out[f"{ib}.{name}.weight"] = (n_out, g * dim)
        out[f"{ib}.{name}.bias"] = (n_out,)
    for i in range(4):
        out[f"{mb}.mask_convs.{2 * i}.weight"] = (dim, dim + 2 if i == 0 else dim, 3, 3)
        out[f"{mb}.mask_convs.{2 * i}.bias"] = (dim,)
    out[f"{mb}.projection.weight"] = (kernel_dim, dim, 1, 1)
    out[f"{mb}.projection.bias"] = (kernel_dim,)
    return out


def random_official_state_dict(layout: Layout, seed: int = 0) -> StateDict:
    """Random float32 tensors for ``layout``; each key gets its own stream.

    Values depend only on (seed, key), so a key holds the same tensor in every
    layout that contains it. Scales keep a 101-layer network's activations O(1).
    """
    sd: StateDict = {}
    for key, shape in layout.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        normal = torch.randn(shape, generator=gen)
        uniform = torch.rand(shape, generator=gen)
        prefix, leaf = key.rsplit(".", 1)
        is_bn = f"{prefix}.running_mean" in layout
        if is_bn and leaf == "running_var":
            t = 0.5 + uniform
        elif is_bn and leaf == "running_mean":
            t = 0.1 * normal
        elif is_bn and leaf == "weight":
            last = prefix.endswith(("conv3.norm", "bn3"))  # end of a residual branch
            t = (0.5 + 0.5 * uniform) * (0.3 if last else 1.0)
        elif leaf == "softmax_bias":
            t = 0.5 + 0.4 * uniform
        elif key.endswith("iam_conv.bias"):
            t = -2.0 + 0.2 * normal
        elif leaf == "bias":  # BN and conv/linear biases
            t = 0.05 * normal
        else:  # conv / linear weight
            gain = 1.0
            if "conv2_offset" in key:
                gain = 0.5  # offsets of about half a pixel
            elif key.endswith("iam_conv.weight"):
                gain = 4.0  # peaky maps, so that instances differ from each other
            elif key.endswith(("mask_kernel.weight", "projection.weight")):
                gain = 0.5
            elif prefix.startswith("backbone") or ".inst_convs." in key or ".mask_convs." in key:
                gain = math.sqrt(2.0)  # ReLU follows
            t = normal * (gain / math.sqrt(math.prod(shape[1:])))
        sd[key] = t.to(torch.float32).contiguous()
    return sd


def _frozen_bn(x: Tensor, sd: StateDict, p: str) -> Tensor:
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5
    )


def _conv(x: Tensor, sd: StateDict, p: str, stride: int = 1, padding: int = 0, groups: int = 1) -> Tensor:
    return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), stride, padding, 1, groups)


def _backbone(sd: StateDict, x: Tensor, arch: str, dcn: bool) -> list[Tensor]:
    vd = arch == "r50vd"
    if vd:
        x = F.relu(_frozen_bn(_conv(x, sd, "backbone.conv1.0", 2, 1), sd, "backbone.conv1.1"))
        x = F.relu(_frozen_bn(_conv(x, sd, "backbone.conv1.3", 1, 1), sd, "backbone.conv1.4"))
        x = F.relu(_frozen_bn(_conv(x, sd, "backbone.conv1.6", 1, 1), sd, "backbone.bn1"))
    else:
        x = F.relu(_frozen_bn(_conv(x, sd, "backbone.stem.conv1", 2, 3), sd, "backbone.stem.conv1.norm"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    feats: list[Tensor] = []
    for s, n in enumerate(_DEPTHS[arch]):
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            p = f"backbone.layer{s + 1}.{i}" if vd else f"backbone.res{s + 2}.{i}"

            def bn(t: Tensor, k: int, _p: str = p) -> Tensor:
                return _frozen_bn(t, sd, f"{_p}.bn{k}" if vd else f"{_p}.conv{k}.norm")

            y = F.relu(bn(_conv(x, sd, f"{p}.conv1"), 1))
            if dcn and s >= 2:
                offset = _conv(y, sd, f"{p}.conv2_offset", stride, 1)
                y = deform_conv2d(y, offset, sd[f"{p}.conv2.weight"], None, (stride, stride), (1, 1))
            else:
                y = _conv(y, sd, f"{p}.conv2", stride, 1)
            y = F.relu(bn(y, 2))
            y = bn(_conv(y, sd, f"{p}.conv3"), 3)
            if i == 0 and vd:
                short = x
                if stride > 1:
                    short = F.avg_pool2d(short, 2, 2, ceil_mode=True, count_include_pad=False)
                short = _frozen_bn(_conv(short, sd, f"{p}.downsample.1"), sd, f"{p}.downsample.2")
            elif i == 0:
                short = _frozen_bn(_conv(x, sd, f"{p}.shortcut", stride), sd, f"{p}.shortcut.norm")
            else:
                short = x
            x = F.relu(y + short)
        if s >= 1:
            feats.append(x)
    return feats  # C3, C4, C5


def _encoder(sd: StateDict, feats: list[Tensor]) -> Tensor:
    c3, c4, c5 = feats
    lat = _conv(c5, sd, "encoder.fpn_laterals.0")
    h, w = lat.shape[-2:]
    pooled = [
        F.interpolate(
            F.relu(_conv(F.adaptive_avg_pool2d(lat, size), sd, f"encoder.ppm.stages.{k}.1")),
            size=(h, w), mode="bilinear", align_corners=False,
        )
        for k, size in enumerate(_PPM_SIZES)
    ]
    prev = F.relu(_conv(torch.cat(pooled + [lat], 1), sd, "encoder.ppm.bottleneck"))
    outputs = [_conv(prev, sd, "encoder.fpn_outputs.0", padding=1)]
    for i, c in ((1, c4), (2, c3)):
        prev = _conv(c, sd, f"encoder.fpn_laterals.{i}") + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        outputs.insert(0, _conv(prev, sd, f"encoder.fpn_outputs.{i}", padding=1))
    size = outputs[0].shape[-2:]
    resized = [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outputs[1:]]
    return _conv(torch.cat([outputs[0]] + resized, 1), sd, "encoder.fusion")


def _decoder(sd: StateDict, feat: Tensor, iam: str, groups: int, num_instances: int) -> tuple[Tensor, Tensor, Tensor]:
    b, _, h, w = feat.shape
    ys = -1.0 + 2.0 * torch.arange(h, dtype=feat.dtype, device=feat.device) / (h - 1)
    xs = -1.0 + 2.0 * torch.arange(w, dtype=feat.dtype, device=feat.device) / (w - 1)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([xx, yy]).unsqueeze(0).expand(b, -1, -1, -1)
    x = torch.cat([coords, feat], 1)
    ib, mb = "decoder.inst_branch", "decoder.mask_branch"

    inst = x
    for i in (0, 2, 4, 6):
        inst = F.relu(_conv(inst, sd, f"{ib}.inst_convs.{i}", padding=1))
    g = groups if iam.startswith("group") else 1
    logits_map = _conv(inst, sd, f"{ib}.iam_conv", padding=1, groups=g)  # (B, N*G, H, W)
    flat = inst.flatten(2).transpose(1, 2)  # (B, HW, D)
    if iam.endswith("softmax"):
        prob = F.softmax(logits_map.flatten(2) + sd[f"{ib}.softmax_bias"], dim=-1)
        inst_feat = torch.bmm(prob, flat)
    else:
        prob = logits_map.sigmoid().flatten(2)
        inst_feat = torch.bmm(prob, flat) / prob.sum(-1).clamp(min=1e-6)[:, :, None]
    if g > 1:  # channel gi*N + n -> group gi of instance n, concatenated group-major
        inst_feat = inst_feat.reshape(b, g, num_instances, -1).transpose(1, 2).reshape(b, num_instances, -1)
        inst_feat = F.relu(F.linear(inst_feat, sd[f"{ib}.fc.weight"], sd[f"{ib}.fc.bias"]))
    cls = F.linear(inst_feat, sd[f"{ib}.cls_score.weight"], sd[f"{ib}.cls_score.bias"])
    kernel = F.linear(inst_feat, sd[f"{ib}.mask_kernel.weight"], sd[f"{ib}.mask_kernel.bias"])
    obj = F.linear(inst_feat, sd[f"{ib}.objectness.weight"], sd[f"{ib}.objectness.bias"])

    m = x
    for i in (0, 2, 4, 6):
        m = F.relu(_conv(m, sd, f"{mb}.mask_convs.{i}", padding=1))
    m = _conv(m, sd, f"{mb}.projection")
    masks = torch.bmm(kernel, m.flatten(2)).view(b, -1, h, w)
    masks = F.interpolate(masks, scale_factor=2.0, mode="bilinear", align_corners=False)
    return cls, obj, masks


@torch.no_grad()
def official_forward(
    sd: StateDict,
    images: Tensor,
    *,
    arch: str = "r50",
    dcn: bool = False,
    iam: str = "group",
    groups: int = 4,
    num_instances: int = 100,
) -> tuple[Tensor, Tensor, Tensor]:
    """(class logits (B,N,C), objectness (B,N,1), mask logits (B,N,H/4,W/4)).

    ``images`` are normalized, (B, 3, H, W) with H and W multiples of 32.
    """
    if arch not in _DEPTHS or iam not in _IAMS:
        raise ValueError(f"unknown arch/iam: {arch!r}, {iam!r}")
    feats = _backbone(sd, images, arch, dcn)
    return _decoder(sd, _encoder(sd, feats), iam, groups, num_instances)


if __name__ == "__main__":
    r50 = official_layout("r50")
    n_elems = sum(math.prod(s) for s in r50.values())
    # the published figure counts nn.Parameters: frozen BN holds all four tensors as buffers
    n_params = sum(math.prod(s) for k, s in r50.items() if f"{k.rsplit('.', 1)[0]}.running_mean" not in r50)
    assert len(r50) == 317 and n_params == 32_794_785 and n_elems == 32_901_025, (len(r50), n_params, n_elems)
    vd = official_layout("r50vd")
    assert sum(k.startswith("backbone.") for k in vd) == 275
    assert [k for k in vd if not k.startswith("backbone.")] == [k for k in r50 if not k.startswith("backbone.")]
    print(f"r50 G-IAM: {len(r50)} tensors, {n_params:,} parameters ({n_elems:,} values with frozen BN); "
          "r50vd backbone: 275 tensors")

    img = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    for arch, dcn, iam in (("r50", False, "group"), ("r50vd", True, "group"), ("r50", False, "sigmoid"),
                           ("r50", False, "softmax"), ("r101", True, "group_softmax")):
        layout = official_layout(arch, dcn=dcn, iam=iam)
        sd = random_official_state_dict(layout, seed=1)
        assert all(tuple(sd[k].shape) == s and sd[k].dtype == torch.float32 for k, s in layout.items())
        keys = list(sd)
        assert len({tuple(sd[k].flatten()[:4].tolist()) for k in keys}) == len(keys), "tensors not distinct"
        cls, obj, masks = official_forward(sd, img, arch=arch, dcn=dcn, iam=iam)
        assert cls.shape == (1, 100, 80) and obj.shape == (1, 100, 1) and masks.shape == (1, 100, 16, 24)
        assert all(bool(t.isfinite().all()) for t in (cls, obj, masks))
        assert min(float(cls.std()), float(obj.std()), float(masks.std())) > 1e-3
        print(f"{arch:5s} dcn={dcn!s:5s} {iam:13s} {len(layout)} tensors | cls {tuple(cls.shape)} std "
              f"{cls.std():.3f} | obj {tuple(obj.shape)} std {obj.std():.3f} | masks {tuple(masks.shape)} "
              f"std {masks.std():.3f} absmax {masks.abs().max():.2f}")
    print("ok")
