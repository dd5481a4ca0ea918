"""Mask R-CNN with the 112 x 112 segmentation head of Di Cosmo et al. (2021) and Smerilli et al. (2022).

Di Cosmo M. et al., "A deep learning approach to median nerve evaluation in ultrasound images of
carpal tunnel inlet", Med Biol Eng Comput (2021); Smerilli G. et al., "Development of a convolutional
neural network for the identification and the measurement of the median nerve on ultrasound images
acquired at carpal tunnel level", Arthritis Res Ther 24:38 (2022).

What the papers fix and this file follows:
* ResNet-101 + FPN backbone (ResNet-50/34/18 as lighter options), random initialisation here
  (COCO weights cannot be downloaded); ``backbone_weights`` loads a torchvision ResNet
  state_dict the user already has.
* Anchors of sizes 32, 64, 128, 256, 512 (one per FPN level) and ratios 1:1, 2:1, 1:2; 256
  anchors sampled per image for the RPN loss; ROIAlign to 14 x 14 for the mask branch.
* Segmentation head: four 3x3 conv (256, ReLU), three 2x2 stride-2 transposed conv (256, ReLU)
  to 112 x 112, 1x1 conv, sigmoid ("mask112"); the ablation heads with one ("mask28") and two
  ("mask56") transposed convs.
* Input: long side resized to 512 with the aspect ratio kept, zero-padded right and bottom to a
  512 x 512 square (a multiple of 32 for the FPN); masks mapped back to the input size.
* Loss: classification + box regression + mask (plus torchvision's two RPN terms, which train
  the proposals as in every Mask R-CNN).

Assumed where the papers are silent: torchvision's proposal and ROI sampling numbers
(``proposals_per_image``, ``rois_per_image``; smaller values train faster on a CPU); one
foreground class (the nerve); the image's z-scored
grayscale repeated on the three ResNet input channels; at inference the highest-scoring
detection gives the nerve (the CSA is of one nerve), its mask pasted into the image.

Interface of the registry: ``forward(x)`` takes (B, 1, H, W) and returns (B, 1, H, W) nerve
logits in eval mode (so the Segmenter, evaluation and the CLI work unchanged); in train mode
``forward(x, masks)`` returns the summed loss (``losses`` gives its terms). After each eval
forward ``last_detections`` holds each image's boxes (input pixels, x1 y1 x2 y2) and scores,
which the Segmenter reports as the detection confidence.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

MASK_HEADS = {"mask28": 1, "mask56": 2, "mask112": 3}  # transposed convolutions after the 14 x 14 ROIAlign
LOGIT_FLOOR = -20.0  # logit of "certainly not nerve" (outside every detection)


class MaskHead(nn.Module):
    """The paper's mask predictor on top of torchvision's four 3x3 convs: ``upsamplings`` 2x2 stride-2
    transposed convs with ReLU (14 -> 28 -> 56 -> 112), then a 1x1 conv to the class logits."""

    def __init__(self, in_channels: int = 256, channels: int = 256, num_classes: int = 2, upsamplings: int = 3):
        super().__init__()
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        for index in range(upsamplings):
            layers[f"up{index + 1}"] = nn.ConvTranspose2d(in_channels if index == 0 else channels, channels, 2, stride=2)
            layers[f"relu{index + 1}"] = nn.ReLU(inplace=True)
        self.upsample = nn.Sequential(layers)
        self.logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.upsample(x))


class MaskRCNN112(nn.Module):
    """torchvision Mask R-CNN (ResNet-FPN) for the median nerve with the paper's 112 x 112 mask head."""

    def __init__(self, backbone: str = "resnet101", mask_head: str = "mask112", image_size: int = 512,
                 backbone_weights: Optional[str] = None, trainable_layers: int = 5,
                 detections_per_image: int = 10, proposals_per_image: int = 2000, rois_per_image: int = 512) -> None:
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
        from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

        if mask_head not in MASK_HEADS:
            raise ValueError(f"mask_head must be one of {sorted(MASK_HEADS)}, got '{mask_head}'")
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (FPN), got {image_size}")
        self.image_size = image_size
        # Trainable batch norm: torchvision's default (frozen statistics) suits pretrained weights, not random ones.
        norm = nn.BatchNorm2d if trainable_layers == 5 else FrozenBatchNorm2d
        fpn = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=trainable_layers,
                                  norm_layer=norm)
        if backbone_weights:
            _load_backbone_weights(fpn.body, Path(backbone_weights))
        anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
        self.detector = MaskRCNN(
            fpn, num_classes=None, min_size=image_size, max_size=image_size,
            image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],  # inputs arrive z-scored
            rpn_anchor_generator=anchors, rpn_batch_size_per_image=256,
            mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(fpn.out_channels, [256, 256, 256, 256], 1),
            box_predictor=FastRCNNPredictor(1024, 2),  # background, nerve (after the default two-layer box head)
            mask_predictor=MaskHead(256, 256, 2, MASK_HEADS[mask_head]),
            box_detections_per_img=detections_per_image, box_score_thresh=0.05,
            rpn_post_nms_top_n_train=proposals_per_image, box_batch_size_per_image=rois_per_image)
        self.last_detections: List[Dict[str, torch.Tensor]] = []

    def letterbox(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 3, S, S): long side resized to S, aspect ratio kept, zero-padded right/bottom."""
        height, width = x.shape[-2:]
        scale = self.image_size / max(height, width)
        size = (round(height * scale), round(width * scale))
        resized = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        padded = F.pad(resized, (0, self.image_size - size[1], 0, self.image_size - size[0]))
        return padded.expand(-1, 3, -1, -1)

    def _targets(self, masks: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """One "nerve" instance per image whose letterboxed mask is not empty (its box from the mask)."""
        targets = []
        for mask in (self.letterbox(masks.float())[:, 0] > 0.5):
            rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
            if len(rows):
                boxes = torch.tensor([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=torch.float32)
                instances = mask[None].to(torch.uint8)
            else:
                boxes, instances = torch.zeros((0, 4)), torch.zeros((0, *mask.shape), dtype=torch.uint8)
            targets.append({"boxes": boxes.to(mask.device), "labels": torch.ones(len(boxes), dtype=torch.int64,
                                                                                   device=mask.device),
                            "masks": instances.to(mask.device)})
        return targets

    def losses(self, x: torch.Tensor, masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        """torchvision's loss terms (loss_classifier, loss_box_reg, loss_mask, loss_objectness,
        loss_rpn_box_reg) for a batch and its nerve masks (B, 1, H, W)."""
        return self.detector(list(self.letterbox(x)), self._targets(masks))

    def detect(self, x: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """Each image's detections (boxes in input pixels, scores, mask probabilities at input size), best first."""
        height, width = x.shape[-2:]
        scale = self.image_size / max(height, width)
        inner = (round(height * scale), round(width * scale))
        results = []
        for found in self.detector(list(self.letterbox(x))):
            masks = found["masks"][:, :, : inner[0], : inner[1]]
            masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False) if len(masks) \
                else masks.new_zeros((0, 1, height, width))
            results.append({"boxes": found["boxes"] / scale, "scores": found["scores"], "masks": masks})
        return results

    def forward(self, x: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.training:
            if masks is None:
                raise ValueError("in train mode Mask R-CNN needs the masks: forward(x, masks)")
            return sum(self.losses(x, masks).values())
        self.last_detections = self.detect(x)
        logits = []
        for found in self.last_detections:
            if len(found["scores"]):
                probability = found["masks"][0].clamp(1e-6, 1 - 1e-6)
                logits.append(torch.logit(probability))
            else:
                logits.append(x.new_full((1, *x.shape[-2:]), LOGIT_FLOOR))
        return torch.stack(logits)


def _load_backbone_weights(body: nn.Module, path: Path) -> None:
    """A torchvision ResNet state_dict (e.g. resnet101-*.pth) into the FPN body; the fc layer is ignored."""
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = {k: v for k, v in torch.load(path, map_location="cpu", weights_only=True).items() if not k.startswith("fc.")}
    expected = body.state_dict()
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path} does not match the {type(body).__name__} backbone: {len(wrong)} tensors missing "
                         f"or of another shape (first: {wrong[0]}); pass a torchvision ResNet of the same depth")
    body.load_state_dict(state, strict=False)
