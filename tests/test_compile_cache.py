"""Compiled networks are kept across runs (stylization/compile_cache.py): a compiled processor gives
the eager one's frames, a second run loads the package the first one built, another model gets
another package, a damaged package is built again, and --compile auto knows a warm shape before
it compiles."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
from conftest import ROOT, TINY_NETWORK, write_video
from network.style_network import StylizingNetwork
from stylization import compile_cache
from stylization import jobs as stylize_jobs
from stylization import processor as processor_module
from stylization.enum_class import ContentType
from stylization.paths import Job
from stylization.processor import Processor, RunOptions

CPU = torch.device("cpu")


def network(seed: int, cfg: config.NetworkConfig = TINY_NETWORK) -> StylizingNetwork:
    torch.manual_seed(seed)
    return StylizingNetwork(cfg).eval()


def test_the_cache_folder_is_the_users_unless_torch_is_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_dir() == tmp_path / "xdg" / config.COMPILE_CACHE_SUBDIR
    assert compile_cache.use_persistent_cache() == tmp_path / "xdg" / config.COMPILE_CACHE_SUBDIR
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(compile_cache.cache_dir())
    assert compile_cache.cache_dir().is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.cache_dir() == tmp_path / "mine"


def test_the_compile_key_follows_what_the_compiled_package_depends_on():
    model = compile_cache.model_id(network(0))
    key = compile_cache.compile_key(model, torch.bfloat16, CPU, (36, 64), 2)
    assert compile_cache.compile_key(compile_cache.model_id(network(0)), torch.bfloat16, CPU,
                                     (36, 64), 2) == key  # the same model, loaded again
    other_sizes = network(0, config.NetworkConfig(channels=(8, 12, 20), stem_kernel=3, res_blocks=1,
                                                  final_kernel=3))
    changed = [compile_cache.compile_key(compile_cache.model_id(network(1)), torch.bfloat16, CPU,
                                         (36, 64), 2),  # other weights: the package holds them
               compile_cache.compile_key(compile_cache.model_id(other_sizes), torch.bfloat16, CPU,
                                         (36, 64), 2),
               compile_cache.compile_key(model, None, CPU, (36, 64), 2),
               compile_cache.compile_key(model, torch.bfloat16, CPU, (36, 66), 2),
               compile_cache.compile_key(model, torch.bfloat16, CPU, (36, 64), 1),
               compile_cache.compile_key(model, torch.bfloat16, torch.device("cuda"), (36, 64), 2)]
    assert len({key, *changed}) == 7


def test_compile_auto_compiles_a_short_clip_once_its_shape_is_warm(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(processor_module, "find_compiler", lambda: "/usr/bin/g++")
    clip = write_video(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    jobs = [Job(str(clip), None)]
    megapixels = 12 * 96 * 64 / 1e6
    monkeypatch.setattr(config, "COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES", megapixels * 10)  # a short clip
    monkeypatch.setattr(config, "COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES", megapixels * 0.9)
    model = compile_cache.model_id(network(0))
    def warm(size):
        return compile_cache.is_warm(compile_cache.compile_key(model, torch.bfloat16, CPU, size, 2))
    assert not stylize_jobs.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)  # cold: eager
    package = compile_cache.package_path(compile_cache.compile_key(model, torch.bfloat16, CPU, (64, 96), 2))
    package.parent.mkdir(parents=True)
    package.write_bytes(b"a package")
    assert stylize_jobs.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)
    assert not stylize_jobs.compile_pays(ContentType.VIDEO, jobs, 48, CPU, warm)  # another size
    monkeypatch.setattr(config, "COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES", megapixels * 1.1)
    assert not stylize_jobs.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)  # too short even warm


# One stylisation process: compiles the tiny network of each seed given and prints whether its
# package was there before, whether it had to be built, and how far the compiled frames are from
# eager ones (a batch of two, then a short last batch of one, which is padded and then cut).
CHILD = """
import json, sys, threading, time
import numpy as np, torch
sys.path[:0] = [sys.argv[1]]
import config  # not conftest: its torchvision import would import Inductor, which is checked below
from network.style_network import StylizingNetwork
from stylization import compile_cache
from stylization.processor import Processor, RunOptions
frames = [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(2)]
report = []
sizes = json.loads(sys.argv[2])

# Whether another thread runs Python while the step runs (the page's camera runs frames side by
# side): with no forced switches, the other thread can run only where this one lets go of it.
# The outputs are kept: freeing a tensor lets go too, between steps.
def lets_go_of_python(step, frames):
    sys.setswitchinterval(60)
    batch = torch.from_numpy(np.stack(frames))
    go, ran_during, in_step, outputs = threading.Lock(), [], [True], []
    go.acquire()
    other = threading.Thread(target=lambda: (go.acquire(), ran_during.append(in_step[0])))
    other.start()
    go.release()
    until = time.perf_counter() + 10
    while not ran_during and time.perf_counter() < until and len(outputs) < 500:
        outputs.append(step(batch))
    in_step[0] = False
    other.join()
    sys.setswitchinterval(0.005)
    return ran_during == [True]

for seed in map(int, sys.argv[3:]):
    torch.manual_seed(seed)
    model = StylizingNetwork(config.NetworkConfig(**{**sizes, "channels": tuple(sizes["channels"])})).eval()
    key = compile_cache.compile_key(compile_cache.model_id(model), None, torch.device("cpu"), (24, 40), 2)
    was_warm = compile_cache.is_warm(key)
    eager = np.stack(Processor(model, "cpu")(frames + frames[:1])).astype(int)
    processor = Processor(model, "cpu", RunOptions(compile=True, batch_size=2))
    compiled = np.stack(processor(frames) + processor(frames[:1])).astype(int)
    report.append({"seed": seed, "was_warm": was_warm, "built": processor.built,
                   "package": str(compile_cache.package_path(key)),
                   "max_diff": int(np.abs(compiled - eager).max()), "output": compiled.tolist(),
                   "lets_go": lets_go_of_python(processor._steps[(2, 24, 40, 3)], frames)})
# A warm start loads the package without importing Inductor (and Dynamo): seconds of a run.
print(json.dumps({"runs": report, "inductor_imported": "torch._inductor" in sys.modules}))
"""


def run_child(cache: Path, *seeds: int) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", CHILD, str(ROOT),
                             json.dumps(dataclasses.asdict(TINY_NETWORK)), *map(str, seeds)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="compiling on the CPU builds C++ kernels: no C++ compiler here")
def test_a_compiled_run_matches_eager_and_a_second_run_loads_its_package(tmp_path, monkeypatch):
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    (first,) = run_child(cache, 0)["runs"]
    assert not first["was_warm"] and first["built"] and first["max_diff"] <= 1
    assert first["lets_go"]
    package = Path(first["package"])
    built_at = package.stat().st_mtime_ns
    # Another model of the same sizes has a package of its own (its weights are in it);
    # test_the_compile_key_follows_what_the_compiled_package_depends_on shows that its key
    # differs, so its package is not asked for here (a second build: half a minute).
    other = compile_cache.compile_key(compile_cache.model_id(network(1)), None, CPU, (24, 40), 2)
    assert not compile_cache.is_warm(other)
    # A new process loads the package without importing Inductor (and Dynamo): seconds of a run.
    warm = run_child(cache, 0)
    assert warm["runs"][0]["was_warm"] and not warm["runs"][0]["built"]
    assert warm["runs"][0]["output"] == first["output"]
    assert package.stat().st_mtime_ns == built_at
    assert not warm["inductor_imported"]


def test_a_damaged_package_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(compile_cache, "_build", lambda step, example, path: (
        calls.append(path), path.write_bytes(b"rebuilt")))
    real_load = compile_cache._load  # refuses the damaged file below with a RuntimeError
    monkeypatch.setattr(compile_cache, "_load", lambda path: (
        (lambda x: x) if path.read_bytes() == b"rebuilt" else real_load(path)))
    key = compile_cache.compile_key(compile_cache.model_id(network(0)), None, CPU, (24, 40), 2)
    package = compile_cache.package_path(key)
    package.parent.mkdir(parents=True)
    package.write_bytes(b"cut short")
    step, built = compile_cache.compiled_step(network(0), torch.zeros(2, 24, 40, 3), key)
    assert built and calls == [package] and package.read_bytes() == b"rebuilt"


def test_a_failed_build_is_one_note_and_the_run_goes_on_eager(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    def fail_to_build(step, example, path):
        raise RuntimeError("C++ compile failed\nmany more lines")
    monkeypatch.setattr(compile_cache, "_build", fail_to_build)
    frames = [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(2)]
    processor = Processor(network(0), "cpu", RunOptions(compile=True, batch_size=2))
    got = processor(frames) + processor(frames)
    eager = Processor(network(0), "cpu")(frames)
    assert all(np.array_equal(a, b) for a, b in zip(got, eager + eager))
    assert not processor.compiled
    assert capsys.readouterr().err.count("compiling the network failed (C++ compile failed)") == 1


def test_cached_only_loads_a_built_package_and_runs_other_sizes_eager(tmp_path, monkeypatch):
    """--compile auto on a webcam: a frame size an earlier run compiled loads its package; any
    other size runs eager at once, nothing is built."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    built, loaded = [], []
    monkeypatch.setattr(compile_cache, "_build", lambda step, example, path: built.append(path))
    eager = Processor(network(0), "cpu")
    monkeypatch.setattr(compile_cache, "_load", lambda path: (
        lambda x: (loaded.append(path), eager._eager(x))[1]))
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)]
    other = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)]
    package = compile_cache.package_path(compile_cache.compile_key(
        compile_cache.model_id(network(0)), torch.float32, CPU, (24, 40), 1))
    package.parent.mkdir(parents=True)
    package.write_bytes(b"built by an earlier run")
    processor = Processor(network(0), "cpu", RunOptions(compile=True, cached_only=True))
    for frames in (small, other, small, other):
        assert np.array_equal(processor(frames)[0], eager(frames)[0])
    assert loaded == [package] * 2 and built == [] and not processor.built
    assert len(list(package.parent.iterdir())) == 1  # nothing written for the other size
