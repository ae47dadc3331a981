"""SparseInst: backbone -> instance context encoder -> IAM decoder."""

from __future__ import annotations

from torch import Tensor, nn

from .decoder import SparseInstOutput


class SparseInst(nn.Module):
    """Composes already built modules.

    ``forward(images)`` takes normalized, padded images (B, 3, H, W) and returns
    ``SparseInstOutput`` (class logits, objectness logits, mask logits at 1/4 scale and, with
    ``return_maps=True``, the activation maps).
    """

    def __init__(self, backbone: nn.Module, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, images: Tensor, return_maps: bool = False) -> SparseInstOutput:
        return self.decoder(self.encoder(self.backbone(images)), return_maps=return_maps)
