#!/usr/bin/env bash
# docs/csa-per-frame.png: the four images of one wrist (Pz020, right: the burned-in DX label of images 1, 2, 3
# and 6) stacked as a clip and segmented as one, as the Slicer module does for a cine.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
.venv/bin/python - "$work/Pz020-right.tif" <<'PY'
import sys
from PIL import Image
frames = [Image.open(f"../shared/data/median-nerve-us/images/Pz020-00{k}.png").convert("L") for k in (1, 2, 3, 6)]
frames[0].save(sys.argv[1], save_all=True, append_images=frames[1:])
PY
.venv/bin/median-nerve-seg segment "$work/Pz020-right.tif" --spacing 0.062 --side right --out "$work/out" > /dev/null
cp "$work/out/Pz020-right_csa.png" docs/csa-per-frame.png
rm -rf "$work"
