#!/usr/bin/env bash
# What this toolkit does on a GPU, in one command of at most 8 minutes:
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]
#
# It prints, each step under its own time limit (a step that fails or runs out says so and the
# next one starts; steps are skipped once GPU_CHECK_SECONDS, 480, are spent):
#   1. the machine: GPUs, torch, whether FFmpeg's NVENC encoder opens, ONNX Runtime's providers;
#   2. 1080p (GPU_CHECK_SIZE) frames/s of the network alone (as stylize.py's pipeline calls it: uint8 frames in
#      and out, batches of 8) per network (default, coarse, fast) and precision, eager, then
#      compiled (stylize.py --compile: AOTInductor packages, build time left out);
#   3. stylize.py end to end on a 10-second 1080p clip with sound (decode, network, H.264 encode
#      on NVENC where it opens, audio mux), whole processes, default and fast network;
#   4. train.py steps/s at 256 and 512 px (benchmarks/train_speed.py), fp16, bf16 and fp32;
#   5. torchrun with NCCL, one process per GPU: train.py stopped by SIGTERM after its first
#      checkpoint (an epoch's end or --save_freq), then resumed with --load_model True and stopped again;
#   6. ONNX Runtime's CUDA provider: the default network exported, stylize.py on the clip.
#
# Inputs are made in WORK_DIR (default: a new temporary folder): the clip (FFmpeg's test
# pattern and a tone), 48 noise photos, a style image, and a VGG16 file of random weights in
# torchvision's layout (speed does not depend on the weights). Nothing outside WORK_DIR is
# written. Needs python3 with this project's requirements; where imageio-ffmpeg is missing,
# videos are written by OpenCV without sound, and steps 1 and 3 say so.
#
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZE=320x180 GPU_CHECK_SECONDS=1500 runs every step on the CPU at
# a small size (two gloo processes for torchrun): a check of the script itself before a GPU's
# minutes are spent.
set -u
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SIZE=${GPU_CHECK_SIZE:-1920x1080}
BUDGET=${GPU_CHECK_SECONDS:-480}  # the whole script; each step's limit is cut to what is left
export PYTHONUNBUFFERED=1 DEVICE SIZE
TRAIN_STEPS=(--batch_size 8 --steps 30 --baseline_steps 5 --warmup 5)
if [ "$DEVICE" = cuda ]; then PROCESSES=$(nvidia-smi -L | wc -l); else
    PROCESSES=2 TRAIN_STEPS=(--batch_size 1 --steps 3 --baseline_steps 1 --warmup 1)
fi
echo "gpu_check: work folder $WORK, device $DEVICE, frames $SIZE, $(date -u +%FT%TZ)"

# A whole python process timed: `"$PY" -c "$TIMED" script.py args...` prints its seconds, the
# clip's frames/s (300 frames) and the last lines it wrote (not its progress bars).
TIMED='import subprocess, sys, time
start = time.perf_counter()
run = subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True, text=True)
seconds = time.perf_counter() - start
lines = [l for l in (run.stdout + run.stderr).replace("\r", "\n").splitlines() if l.strip() and "|" not in l]
print(*lines[-4:], sep="\n")
print(f"whole process: {seconds:.1f} s, {300 / seconds:.1f} frames/s of the 300-frame clip, exit {run.returncode}")
sys.exit(run.returncode)'

step() {  # step NAME SECONDS COMMAND...: run with a time limit, say how it ended
    local name=$1 limit=$2
    shift 2
    echo
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 15 ]; then echo "== $name: skipped, the ${BUDGET} s are spent"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout -k 15 "$limit" "$@"
    local rc=$?
    local verdict="ok"
    [ "$rc" -eq 124 ] && verdict="TIMED OUT"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && verdict="FAILED (exit $rc)"
    echo "-- $name: $verdict after $((SECONDS - start)) s"
}

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
step "machine" 30 "$PY" - <<'EOF'
import torch, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)
for i in range(torch.cuda.device_count()):
    print("GPU", i, torch.cuda.get_device_name(i), "bf16 in hardware:",
          torch.cuda.is_bf16_supported(including_emulation=False))
from stylization.sink import find_ffmpeg, nvenc_opens
exe = find_ffmpeg()
print("FFmpeg:", exe or "none (imageio-ffmpeg missing: OpenCV writes videos, without sound)")
print("NVENC opens:", bool(exe) and nvenc_opens(exe))
try:
    import onnxruntime
    print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
except ImportError:
    print("onnxruntime: not installed")
EOF

step "inputs" 60 "$PY" - "$WORK" <<'EOF'
import os, subprocess, sys
from pathlib import Path
import cv2, numpy as np, torch, torchvision
work = Path(sys.argv[1])
width, height = map(int, os.environ["SIZE"].split("x"))
photos = work / "photos"
photos.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for i in range(48):
    noise = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    cv2.imwrite(str(photos / f"p{i:02d}.jpg"), cv2.GaussianBlur(noise, (0, 0), 1 + i % 5))
style = cv2.applyColorMap(cv2.GaussianBlur(rng.integers(0, 256, (512, 512), dtype=np.uint8), (0, 0), 4),
                          cv2.COLORMAP_JET)
cv2.imwrite(str(work / "style.jpg"), style)
torch.save(torchvision.models.vgg16(weights=None).state_dict(), work / "vgg16.pth")
try:
    import imageio_ffmpeg
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30:duration=10",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=10", "-c:v", "libx264", "-crf", "20",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(work / "clip1080.mp4")], check=True)
except ImportError:  # OpenCV alone: a silent clip
    writer = cv2.VideoWriter(str(work / "clip1080.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    base = cv2.resize(style, (width, height))
    for i in range(300):
        writer.write(np.roll(base, 8 * i, axis=1))
    writer.release()
print("made", work / "clip1080.mp4", "48 photos, style.jpg, vgg16.pth (random weights)")
EOF

step "network frames/s at $SIZE" 150 "$PY" - <<'EOF'
import os, time
import numpy as np, torch
from network.formats import load_model
from stylization.processor import Processor, RunOptions
width, height = map(int, os.environ["SIZE"].split("x"))
device = os.environ["DEVICE"]
frames = [np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8) for i in range(8)]
precisions = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
models = ["mosaic", "mosaic_coarse", "mosaic_fast"]
print("| network file | precision | eager frames/s | compiled frames/s |\n|---|---|---|---|")
def rate(processor, seconds=3.0):
    processor(frames)  # warm-up; compiled: the build (results come back to the CPU: synchronised)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        processor(frames)
        count += len(frames)
    return count / (time.perf_counter() - start)
eager = {}
for name in models:
    model = load_model(f"trained_models/{name}.pth.tar")
    for label, dtype in precisions.items():
        eager[name, label] = rate(Processor(model, device, RunOptions(dtype=dtype, batch_size=8)))
        print(f"| {name} | {label} | {eager[name, label]:.1f} | (below) |", flush=True)
for label in ("fp16", "bf16", "fp32"):  # fp16 first: what --precision auto runs on CUDA; as time allows
    for name in models:
        model = load_model(f"trained_models/{name}.pth.tar")
        processor = Processor(model, device, RunOptions(dtype=precisions[label], batch_size=8, compile=True))
        print(f"| {name} | {label} | {eager[name, label]:.1f} | {rate(processor):.1f} |", flush=True)
EOF

for model in mosaic mosaic_fast; do
    step "stylize.py, 10-second $SIZE clip, $model" 45 "$PY" -c "$TIMED" stylize.py --content_type video \
        --source "$WORK/clip1080.mp4" --device "$DEVICE" --model_path "trained_models/$model.pth.tar" \
        --output_dir "$WORK/out" --output_name "$model.mp4" --overwrite True --real_time False
done

for size in 256 512; do
    step "training steps/s at $size px" 45 "$PY" benchmarks/train_speed.py --loss_net_path "$WORK/vgg16.pth" \
        --content_dir "$WORK/photos" --style_path "$WORK/style.jpg" --device "$DEVICE" --img_size "$size" \
        "${TRAIN_STEPS[@]}" --precisions fp16 bf16 fp32
done

step "torchrun, $PROCESSES processes, SIGTERM and resume" 90 bash -c "
gpus=$PROCESSES
train=(train.py --device $DEVICE --content_dir '$WORK/photos' --style_path '$WORK/style.jpg' --loss_net_path '$WORK/vgg16.pth' --model_dir '$WORK/models' --model_name check.pth.tar --train_output_dir '$WORK/train_out' --img_size 256 --batch_size 4 --save_freq 10 --epochs 50)
for round in 1 2; do
    extra=(); [ \$round -eq 2 ] && extra=(--load_model True)
    $PY -m torch.distributed.run --standalone --nproc_per_node \$gpus \"\${train[@]}\" \"\${extra[@]}\" > '$WORK/torchrun'\$round.log 2>&1 &
    pid=\$!
    for i in \$(seq 60); do sleep 1; [ \$round -eq 1 ] && ls '$WORK/models/'*.pth.tar >/dev/null 2>&1 && break; [ \$round -eq 2 ] && [ \$i -ge 20 ] && break; done
    kill -TERM \$pid; wait \$pid; rc=\$?
    echo \"round \$round (\$gpus processes): exit \$rc after SIGTERM\"; grep -a -E 'resuming|interrupted|Error' '$WORK/torchrun'\$round.log | head -n 5
done
ls '$WORK/models'"

step "ONNX export" 30 "$PY" -m network.export trained_models/mosaic.pth.tar --output_dir "$WORK/onnx" \
    --formats onnx --overwrite True
step "ONNX Runtime (CUDA provider where it has one), 10-second $SIZE clip" 45 "$PY" -c "$TIMED" stylize.py \
    --content_type video --source "$WORK/clip1080.mp4" --device "$DEVICE" --model_path "$WORK/onnx/mosaic.onnx" \
    --output_dir "$WORK/out" --output_name onnx.mp4 --overwrite True --real_time False

echo
echo "gpu_check: done, $(date -u +%FT%TZ)"
