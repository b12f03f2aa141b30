#!/usr/bin/env bash
# Regenerate the pictures in docs/img: the HTML report screenshots (headless Chromium) and the
# plots docs/reproduction.md shows. Not run by CI. Needs the package importable (run from the
# repository root, e.g. `PYTHONPATH=$PWD bash docs/img/make_screenshots.sh`), Chromium
# (Debian: `apt-get install -y chromium`) and Pillow (a matplotlib dependency). About 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
CHROMIUM=${CHROMIUM:-chromium}
IMG=docs/img
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# HTML reports: the shipped default sample (no argument) and the 4-level residual VQ sample.
$PY -m vqdoctor inspect --html "$TMP/default.html" -q
$PY -m vqdoctor inspect sample_checkpoints/residual_vq.safetensors --html "$TMP/rvq.html" -q

shot() {  # shot HTML PNG HEIGHT: a 1280-px-wide screenshot of the page's top HEIGHT pixels
  sed "s#$PWD/##g" "$1" > "$TMP/page.html"  # show repository-relative paths, not this machine's
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$(mktemp -d -p "$TMP")" \
    --hide-scrollbars --screenshot="$2" --window-size="1280,$3" "file://$TMP/page.html" 2>/dev/null
  # 256 colours (the page is flat colour and line art): keeps each file well under 400 KB
  $PY - "$2" <<'PY'
import sys
from PIL import Image
path = sys.argv[1]
Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
PY
}
shot "$TMP/default.html" "$IMG/html-report.png" 2400
shot "$TMP/rvq.html" "$IMG/html-report-rvq.png" 2400

# The plots docs/reproduction.md shows (--projection tsne --plots DIR), copied under their doc names.
plots() {  # plots SAMPLE DIR
  $PY -m vqdoctor inspect "sample_checkpoints/$1.safetensors" --projection tsne --plots "$TMP/$2" -q
}
plots vanilla_tokens_collapse vanilla
plots pretrained_healthy pretrained
plots small_encoder_embeddings_collapse small
plots large_codebook_vanilla large-vanilla
plots large_codebook_simvq large-simvq
cp "$TMP/vanilla/projection.png" "$IMG/vanilla-projection.png"
cp "$TMP/vanilla/01-quantizer-allocation.png" "$IMG/vanilla-allocation.png"
cp "$TMP/vanilla/01-quantizer-allocation-heatmap.png" "$IMG/vanilla-allocation-heatmap.png"
cp "$TMP/pretrained/01-quantizer-allocation.png" "$IMG/pretrained-allocation.png"
cp "$TMP/pretrained/01-quantizer-allocation-heatmap.png" "$IMG/pretrained-allocation-heatmap.png"
cp "$TMP/small/projection.png" "$IMG/small-encoder-projection.png"
cp "$TMP/large-vanilla/01-quantizer-rank-frequency.png" "$IMG/large-vanilla-rank-frequency.png"
cp "$TMP/large-simvq/01-"*"-rank-frequency.png" "$IMG/large-simvq-rank-frequency.png"
ls -l "$IMG"
