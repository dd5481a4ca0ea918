"""docs/click-example.png: the held-out image on which the shipped segmenter is furthest from the expert, fixed with
the clicks a user would make (where the contour is most wrong), through the `refine` command, one call per click.

    .venv/bin/python docs/tools/make_click_example.py ../shared/data/median-nerve-us docs/click-example.png
"""

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from MedianNerveSegLib.cli import main  # noqa: E402
from MedianNerveSegLib.clicks import next_click  # noqa: E402
from MedianNerveSegLib.data import list_samples, split_by_patient  # noqa: E402
from MedianNerveSegLib.evaluate import dice  # noqa: E402
from MedianNerveSegLib.inference import Segmenter  # noqa: E402
from MedianNerveSegLib.io import read_image, read_mask, write_mask_png  # noqa: E402

SPACING, CLICKS, MARGIN = 0.062, 2, 60


def worst_held_out(dataset: Path, segmenter: Segmenter):
    _, held_out = split_by_patient(list_samples(dataset))
    scored = []
    for sample in held_out:
        mask = segmenter.predict(read_image(sample.image, spacing_mm=SPACING)).mask
        scored.append((dice(mask, read_mask(sample.mask)), sample, mask))
    return min(scored, key=lambda item: item[0])


def panel(axis, frame, truth, mask, clicks, title, box):
    axis.imshow(frame[box], cmap="gray")
    axis.contour(truth[box], [0.5], colors="lime", linewidths=1.2)
    axis.contour(mask[box], [0.5], colors="gold", linewidths=1.2)
    for click in clicks:
        axis.plot(click.x - box[1].start, click.y - box[0].start, "P" if click.positive else "X", markersize=11,
                  color="limegreen" if click.positive else "red", markeredgecolor="white")
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def main_figure(dataset: Path, out: Path) -> None:
    segmenter = Segmenter("median_nerve_unet", runtime="torch")
    _, sample, mask = worst_held_out(dataset, segmenter)
    frame = read_image(sample.image).frame(0)
    truth = read_mask(sample.mask)
    masks, clicks = [mask], []
    with tempfile.TemporaryDirectory() as work:
        current = Path(work) / "ai_mask.png"
        write_mask_png(current, mask)
        for _ in range(CLICKS):  # one refine call per click, as a user would make them
            click = next_click(masks[-1], truth)
            clicks.append(click)
            assert main(["refine", str(sample.image), "--mask", str(current), "--click", str(click), "--out",
                         str(Path(work) / "refined"), "--spacing", str(SPACING)]) == 0
            current = Path(work) / "refined" / f"{sample.image.stem}_mask.png"
            masks.append(read_mask(current))
    rows, cols = np.nonzero(truth | masks[0])
    box = (slice(max(rows.min() - MARGIN, 0), rows.max() + MARGIN),
           slice(max(cols.min() - MARGIN, 0), cols.max() + MARGIN))
    csa = lambda m: m.sum() * SPACING ** 2
    figure, axes = plt.subplots(1, CLICKS + 1, figsize=(4.2 * (CLICKS + 1), 3.4))
    for count, (axis, current_mask) in enumerate(zip(axes, masks)):
        label = "AI (median_nerve_unet)" if count == 0 else f"after {count} click{'s' if count > 1 else ''}"
        panel(axis, frame, truth, current_mask, clicks[:count],
              f"{label}\nCSA {csa(current_mask):.2f} mm² (expert {csa(truth):.2f}), DSC {dice(current_mask, truth):.3f}",
              box)
    figure.suptitle(f"{sample.image.name}, a held-out patient: expert contour green, model contour yellow; "
                    "+ nerve click, x background click", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.savefig(out, dpi=110)
    print(f"wrote {out}: {sample.image.name}, DSC {' -> '.join(f'{dice(m, truth):.3f}' for m in masks)}")


if __name__ == "__main__":
    main_figure(Path(sys.argv[1]), Path(sys.argv[2]))
