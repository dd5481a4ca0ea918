#!/usr/bin/env bash
# docs/explain-example.png: where the shipped classifier looked (occlusion, LIME, Grad-CAM on its 15 mm crop) and
# where the shipped segmenter looked (occlusion, Grad-CAM) on one held-out image, each map as classify --explain
# and explain write it. Usage: make_explain_example.sh [IMAGE_STEM] (default Pz059-001, a validation patient's).
set -euo pipefail
cd "$(dirname "$0")/../.."
stem=${1:-Pz059-001}
venv=.venv-maskrcnn  # the shipped classifier (SqueezeNet 1.1) needs torchvision
image=../shared/data/median-nerve-us/images/$stem.png
work=$(mktemp -d)
$venv/bin/median-nerve-seg classify "$image" --spacing 0.062 --explain occlusion,lime,gradcam --out "$work/classify" > /dev/null
$venv/bin/median-nerve-seg explain "$image" --spacing 0.062 --explain occlusion,gradcam --out "$work/explain" > /dev/null
$venv/bin/python - "$work" "$stem" docs/explain-example.png <<'PY'
import sys
from PIL import Image
work, stem, out = sys.argv[1:]
rows = [[f"{work}/classify/{stem}_{m}.png" for m in ("occlusion", "lime", "gradcam")],
        [f"{work}/explain/{stem}_{m}.png" for m in ("occlusion", "gradcam")]]
tiles = [[Image.open(p).convert("RGB") for p in row] for row in rows]
width, height = max(t.width for row in tiles for t in row), max(t.height for row in tiles for t in row)
sheet = Image.new("RGB", (3 * width, 2 * height), "white")
for r, row in enumerate(tiles):
    for c, tile in enumerate(row):
        sheet.paste(tile, (c * width, r * height))
sheet.save(out, optimize=True)
PY
rm -rf "$work"
