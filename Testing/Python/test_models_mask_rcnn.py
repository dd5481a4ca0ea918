"""Mask R-CNN with the paper's 112 x 112 head (Di Cosmo 2021, Smerilli 2022); needs torchvision."""

import numpy as np
import pytest
import torch

from MedianNerveSegLib.models import available_models, build_model, package_works

pytestmark = [pytest.mark.maskrcnn,
              pytest.mark.skipif(not package_works("torchvision"), reason="torchvision (the maskrcnn extra) not installed")]

SMALL = {"backbone": "resnet18", "image_size": 256}  # CPU-sized variant for the tests


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(2)


def _nerve_masks(batch, height, width):
    masks = torch.zeros(batch, 1, height, width)
    masks[:, :, height // 3: height // 2, width // 3: width // 2] = 1
    return masks


def test_registered_as_a_detector_with_the_papers_anchors_and_roi_align():
    assert "mask_rcnn" in available_models(kind="detector")
    model = build_model("mask_rcnn")
    detector = model.detector
    assert detector.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert set(detector.rpn.anchor_generator.aspect_ratios) == {(0.5, 1.0, 2.0)}
    assert detector.rpn.fg_bg_sampler.batch_size_per_image == 256
    assert detector.roi_heads.mask_roi_pool.output_size == (14, 14)
    convs = [m for m in detector.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.out_channels) for c in convs] == [((3, 3), 256)] * 4
    assert type(detector.backbone.body.layer3[22]).__name__ == "Bottleneck"  # ResNet-101: 23 blocks in layer3


@pytest.mark.parametrize("head, size", [("mask112", 112), ("mask56", 56), ("mask28", 28)])
def test_mask_heads_upsample_the_14x14_roi_to_their_size(head, size):
    predictor = build_model("mask_rcnn", mask_head=head, **SMALL).detector.roi_heads.mask_predictor
    transposed = [m for m in predictor.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.kernel_size, m.stride, m.out_channels) for m in transposed] == [((2, 2), (2, 2), 256)] * (size // 28).bit_length()
    assert predictor(torch.randn(3, 256, 14, 14)).shape == (3, 2, size, size)


def test_letterbox_keeps_the_aspect_ratio_and_pads_right_and_bottom():
    model = build_model("mask_rcnn", backbone="resnet18")
    image = torch.ones(1, 1, 468, 606)
    boxed = model.letterbox(image)
    assert boxed.shape == (1, 3, 512, 512)
    assert torch.all(boxed[0, :, :395, :] == 1) and torch.all(boxed[0, :, 396:, :] == 0)
    tall = model.letterbox(torch.ones(1, 1, 606, 300))
    assert torch.all(tall[0, 0, :, :253] == 1) and torch.all(tall[0, 0, :, 254:] == 0)


def test_train_mode_returns_the_losses_and_gradients_flow():
    model = build_model("mask_rcnn", **SMALL).train()
    images, masks = torch.randn(2, 1, 234, 303), _nerve_masks(2, 234, 303)
    losses = model.losses(images, masks)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    total = model(images, masks)
    assert total.ndim == 0 and torch.isfinite(total)
    total.backward()
    predictor = model.detector.roi_heads.mask_predictor
    for module in (predictor.logits, model.detector.backbone.body.conv1, model.detector.roi_heads.box_predictor.cls_score):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs the masks"):
        model(images)


def test_eval_output_is_nerve_logits_at_the_input_size_with_detections():
    model = build_model("mask_rcnn", **SMALL).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 301, 257))
    assert logits.shape == (2, 1, 301, 257)
    assert len(model.last_detections) == 2
    for found in model.last_detections:
        assert found["masks"].shape[1:] == (1, 301, 257)
        assert torch.all(found["scores"][:-1] >= found["scores"][1:])  # best first
        assert found["boxes"].shape == (len(found["scores"]), 4)


def test_a_short_training_lowers_the_losses(dataset_dir):
    from MedianNerveSegLib.augment import zscore
    from MedianNerveSegLib.data import list_samples
    from MedianNerveSegLib.io import read_image, read_mask
    from MedianNerveSegLib.preprocess import resize

    samples = list_samples(dataset_dir)[:2]
    images = torch.cat([resize(torch.from_numpy(read_image(s.image).pixels.astype(np.float32))[None, None], (234, 303))
                        for s in samples])
    masks = torch.cat([resize(torch.from_numpy(read_mask(s.mask).astype(np.float32))[None, None], (234, 303))
                       for s in samples])
    model = build_model("mask_rcnn", **SMALL).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(12):
        losses = model.losses(zscore(images), masks)
        history.append({k: float(v.detach()) for k, v in losses.items()})
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    total = [sum(h.values()) for h in history]
    assert np.mean(total[-3:]) < 0.7 * np.mean(total[:3])
    for term in ("loss_classifier", "loss_mask", "loss_objectness"):
        assert np.mean([h[term] for h in history[-3:]]) < np.mean([h[term] for h in history[:3]])


def test_backbone_weights_a_user_has(tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = build_model("mask_rcnn", backbone_weights=str(path), **SMALL)
    assert torch.equal(model.detector.backbone.body.conv1.weight, resnet.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not match"):
        build_model("mask_rcnn", backbone_weights=str(tmp_path / "other.pth"), **SMALL)
    with pytest.raises(FileNotFoundError):
        build_model("mask_rcnn", backbone_weights=str(tmp_path / "missing.pth"), **SMALL)


def test_trained_by_train_and_used_by_segment(dataset_dir, tmp_path):
    from MedianNerveSegLib.cli import main
    from MedianNerveSegLib.inference import Segmenter
    from MedianNerveSegLib.io import read_image
    from MedianNerveSegLib.train import TrainConfig, train

    cfg = TrainConfig(name="mask_rcnn_smoke", architecture="mask_rcnn", arch_kwargs=SMALL, input_size=(234, 303),
                      epochs=1, batch_size=4, optimizer="sgd", learning_rate=1e-3, ema_decay=0.0, max_images=8)
    train(dataset_dir, tmp_path / "model", cfg)
    segmenter = Segmenter(tmp_path / "model")
    image = read_image(next((dataset_dir / "images").iterdir()), 0.062)
    prediction = segmenter.predict(image)
    assert prediction.mask.shape == prediction.probability.shape == image.pixels.shape
    scores = segmenter.network.last_detections[0]["scores"]
    assert prediction.confidence == (float(scores[0]) if len(scores) else 0.0)
    assert main(["segment", str(image.source), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "measurements.csv").is_file()

    from MedianNerveSegLib.benchmark import evaluate_model
    from MedianNerveSegLib.data import list_samples

    summary = evaluate_model(tmp_path / "model", list_samples(dataset_dir)[:3], 0.062, out_dir=tmp_path / "eval")
    counts = [summary[key] for key in ("detection_tp", "detection_fp", "detection_fn")]
    assert sum(counts) == 3  # every image is a TP, FP or FN of the papers' detection rule (box scores)


def test_bundle_follows_the_papers_recipe():
    from monai.bundle import ConfigParser

    from conftest import REPO

    parser = ConfigParser()
    parser.read_config(str(REPO / "training" / "mask_rcnn" / "configs" / "train.json"))
    cfg = parser.get_parsed_content("train_config")
    assert (cfg.architecture, cfg.optimizer, cfg.learning_rate, cfg.epochs) == ("mask_rcnn", "sgd", 1e-3, 150)
    assert tuple(cfg.input_size) == (468, 606) and cfg.keep_best
    augment = cfg.augment
    assert (augment.scale, augment.translate, augment.rotate_deg, augment.shear_deg) == ((0.8, 1.2), 0.2, 10.0, 2.0)
