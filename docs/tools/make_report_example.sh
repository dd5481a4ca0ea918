#!/usr/bin/env bash
# The example report of docs/report-example/: two held-out patients of the Jesi dataset (Pz009, Pz010),
# each wrist segmented as the clinic would run it. The PNG exports carry neither spacing nor side: the
# scanner's 0.062 mm is given, and each image's side is read from its burned-in label (DX right, SN left).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/median-nerve-us/images
work=$(mktemp -d)
seg() {  # patient side images...
    local patient=$1 side=$2; shift 2
    .venv/bin/median-nerve-seg segment "${@/#/$data/}" --spacing 0.062 --patient "$patient" --side "$side" \
        --out "$work/$patient-$side" > /dev/null
}
seg Pz010 right Pz010-002.png Pz010-003.png Pz010-004.png
seg Pz010 left Pz010-001.png Pz010-005.png Pz010-006.png
seg Pz009 right Pz009-002.png
seg Pz009 left Pz009-001.png Pz009-003.png
rm -rf docs/report-example
.venv/bin/median-nerve-seg report "$work"/* --out docs/report-example
rm -rf "$work"
