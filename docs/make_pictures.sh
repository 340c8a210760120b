#!/usr/bin/env bash
# Rebuilds the pictures of README.md and docs/shipped_models.md with the project's own commands,
# from files the repository holds (docs/grace_hopper.jpg, trained_models/, docs/losses/).
# Usage: bash docs/make_pictures.sh [<model>=<train_output_dir of its run> ...]
#   Each <model>=<dir> first copies that run's loss plot (<dir>/<model>_losses.png, as train.py
#   drew it) to docs/losses/<model>.png, labelled; then docs/gallery.jpg (the sample photo
#   through the model named after each of the seven styles) and docs/loss_plots.png (every plot
#   in docs/losses/) are written. e.g. bash docs/make_pictures.sh candy_fast=runs/candy_fast/out
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -r "$out"' EXIT

# The sample photo through each style's model: stylize.py writes a labelled contact sheet.
models=()
for style in mosaic candy udnie rain_princess the_scream shipwreck woman_with_hat; do
  models+=("trained_models/$style.pth.tar")
done
python stylize.py --content_type image --source docs/grace_hopper.jpg --model_path "${models[@]}" \
    --real_time False --precision fp32 --output_dir "$out"
python - "$out" <<'PY'
import sys
from pathlib import Path
from PIL import Image
sheets = list(Path(sys.argv[1]).glob("*contact_sheet*.png"))
if sheets:  # several models: their contact sheet
    Image.open(sheets[0]).convert("RGB").save("docs/gallery.jpg", quality=88)
else:  # one model: the photo and its output side by side
    photo = Image.open("docs/grace_hopper.jpg").convert("RGB")
    styled = Image.open(next(Path(sys.argv[1]).glob("grace_hopper_*.png"))).convert("RGB")
    pair = Image.new("RGB", (photo.width + styled.width, photo.height))
    pair.paste(photo, (0, 0))
    pair.paste(styled, (photo.width, 0))
    pair.save("docs/gallery.jpg", quality=88)
PY

# Each model's loss plot as train.py drew it, named, two to a row.
python - "$@" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageDraw
kept = Path("docs/losses")
kept.mkdir(exist_ok=True)
for pair in sys.argv[1:]:
    model, _, folder = pair.partition("=")
    plot = Image.open(f"{folder}/{model}_losses.png").convert("RGB")
    ImageDraw.Draw(plot).text((10, 8), model, fill=(0, 0, 0))
    plot.save(kept / f"{model}.png")
plots = [Image.open(path).convert("RGB") for path in sorted(kept.glob("*.png"))]
if plots:
    w, h = plots[0].size
    columns = min(2, len(plots))
    sheet = Image.new("RGB", (w * columns, h * -(-len(plots) // columns)), "white")
    for i, plot in enumerate(plots):
        sheet.paste(plot.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    sheet.save("docs/loss_plots.png")
PY
