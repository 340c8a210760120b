#!/usr/bin/env bash
# Rebuilds the pictures in README.md with the project's own commands.
# Usage: bash docs/make_pictures.sh <train_output_dir of the shipped model's run>
set -euo pipefail
cd "$(dirname "$0")/.."
train_output=${1:?give the --train_output_dir of the run that trained trained_models/mosaic.pth.tar}
out=$(mktemp -d)

python stylize.py --content_type image --source docs/grace_hopper.jpg \
    --model_path trained_models/mosaic.pth.tar --real_time False --precision fp32 \
    --output_dir "$out" --output_name stylised.png
python - "$out/stylised.png" <<'PY'
import sys
from PIL import Image
photo, styled = Image.open("docs/grace_hopper.jpg").convert("RGB"), Image.open(sys.argv[1])
pair = Image.new("RGB", (photo.width + styled.width, photo.height))
pair.paste(photo, (0, 0))
pair.paste(styled, (photo.width, 0))
pair.save("docs/grace_hopper_side_by_side.jpg", quality=85)
PY
cp "$train_output/mosaic_losses.png" docs/mosaic_losses.png
rm -r "$out"
