#!/usr/bin/env bash
# The README's "Temporal stability" evidence: trains models that differ only in their temporal
# loss on the same budget, holding out the end of the bikes clip, then scores them on it
# (benchmarks/temporal_stability.py) and draws docs/temporal_models.jpg.
#
# Usage: bash benchmarks/temporal_evidence.sh [work folder, default /tmp/temporal_evidence]
# Needs ../shared (media and the stand-in VGG16). On the busy 2-core CPU the base run took
# about 25 minutes, each variant 8-15 minutes and the scoring about 2 minutes per model.
# The environment variables below change the budget, the loss weights and the variants; a
# variant already trained in the work folder (its "done" file) is only scored again.
#
# Budget: every model gets the same steps. All start from one plain run of BASE_EPOCHS
# epochs, then each trains VARIANT_EPOCHS more epochs with its own temporal loss (the
# README's recipe workflow of resuming with new weights); "plain" continues without one.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/temporal_evidence}
shared=../shared
BASE_EPOCHS=${BASE_EPOCHS:-6}
VARIANT_EPOCHS=${VARIANT_EPOCHS:-3}
LAMBDA_CONTENT=${LAMBDA_CONTENT:-10}
LAMBDA_STYLE=${LAMBDA_STYLE:-10}
HELD_OUT_FROM=187  # bikes.mp4 frames 187-249 (its last two shots) are never trained on
# name:lambda_noise:lambda_flow of each model; the first is the reference of the table's ratios
VARIANTS=${VARIANTS:-"plain:0:0 noise:500:0 flow:0:2000 noise-150:150:0 flow-500:0:500 flow-150:0:150 both-150:150:150"}

# Training frames as the shipped model's: every 2nd frame of both clips (longer side 360) and
# the two photos, minus the held-out part of the bikes clip.
mkdir -p "$work/all_frames" "$work/train_frames"
if [ -z "$(ls -A "$work/all_frames")" ]; then
    python utils.py extract-frames --video_dir "$shared/media/video" --frames_dir "$work/all_frames" \
        --every 2 --max_size 360
    cp "$shared/media/content/"*.jpg "$work/all_frames/"
fi
for f in "$work/all_frames/"*; do
    name=$(basename "$f")
    if [[ $name =~ ^bikes_([0-9]+)\. ]] && (( 10#${BASH_REMATCH[1]} >= HELD_OUT_FROM )); then
        continue
    fi
    ln -sf "$f" "$work/train_frames/$name"
done

common=(--device cpu --precision bf16 --batch_size 4 --img_size 128 --seed 0
        --content_dir "$work/train_frames" --style_path "$shared/media/style/mosaic.jpg" --style_size 384
        --loss_net_choice VGG16 --loss_net_path "$shared/weights/vgg16_hed_features.pth"
        --lr 5e-4 --lambda_content "$LAMBDA_CONTENT" --lambda_style "$LAMBDA_STYLE" --lambda_regu 1e-2
        --noise_per_img 10000 --noise_range 200 --save_freq 1000 --train_output_dir "$work/out"
        --flow_cache_dir "$work/flow_cache")

if [ ! -f "$work/base/base.pth.tar" ]; then
    python train.py "${common[@]}" --model_dir "$work/base" --model_name base.pth.tar \
        --epochs "$BASE_EPOCHS" --lambda_noise 0 --lambda_flow 0
fi
models=()
for spec in $VARIANTS; do  # name:lambda_noise:lambda_flow
    IFS=: read -r variant lambda_noise lambda_flow <<< "$spec"
    if [ ! -f "$work/$variant/done" ]; then
        rm -rf "${work:?}/$variant" && mkdir -p "$work/$variant"
        cp "$work/base/base.pth.tar" "$work/$variant/$variant.pth.tar"
        python train.py "${common[@]}" --model_dir "$work/$variant" --model_name "$variant.pth.tar" \
            --load_model True --epochs "$VARIANT_EPOCHS" --lambda_noise "$lambda_noise" --lambda_flow "$lambda_flow"
        touch "$work/$variant/done"
    fi
    models+=(--model "$variant=$work/$variant/$variant.pth.tar")
done

python benchmarks/temporal_stability.py "${models[@]}" \
    --video "$shared/media/video/bikes.mp4" --start_frame "$HELD_OUT_FROM" --max_size 360 \
    --style_path "$shared/media/style/mosaic.jpg" --style_size 384 \
    --loss_net_path "$shared/weights/vgg16_hed_features.pth" --img_size 128 \
    --picture docs/grace_hopper.jpg --picture_out docs/temporal_models.jpg --picture_height 160
