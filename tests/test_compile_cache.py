"""Compiled networks are kept across runs (stylization/compile_cache.py): a second run reuses the
cache, another model of the same sizes gets its own weights, and --compile auto knows a warm
shape before it compiles."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import config
from conftest import ROOT, TINY_NETWORK, write_video
from network.style_network import StylizingNetwork
from stylization import compile_cache
from stylization import main as stylize_main
from stylization.enum_class import ContentType
from stylization.paths import Job

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


def test_the_shape_key_follows_what_the_compiled_graph_depends_on():
    key = compile_cache.shape_key(network(0), torch.bfloat16, CPU, (36, 64), 2)
    assert compile_cache.shape_key(network(1), torch.bfloat16, CPU, (36, 64), 2) == key  # weights: no
    other_sizes = network(0, config.NetworkConfig(channels=(8, 12, 20), stem_kernel=3, res_blocks=1,
                                                  final_kernel=3))
    changed = [compile_cache.shape_key(other_sizes, torch.bfloat16, CPU, (36, 64), 2),
               compile_cache.shape_key(network(0), None, CPU, (36, 64), 2),
               compile_cache.shape_key(network(0), torch.bfloat16, CPU, (36, 66), 2),
               compile_cache.shape_key(network(0), torch.bfloat16, CPU, (36, 64), 1),
               compile_cache.shape_key(network(0), torch.bfloat16, torch.device("cuda"), (36, 64), 2)]
    assert len({key, *changed}) == 6


def test_compile_auto_compiles_a_short_clip_once_its_shape_is_warm(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(stylize_main, "find_compiler", lambda: "/usr/bin/g++")
    clip = write_video(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    jobs = [Job(str(clip), None)]
    megapixels = 12 * 96 * 64 / 1e6
    monkeypatch.setattr(config, "COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES", megapixels * 10)  # a short clip
    monkeypatch.setattr(config, "COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES", megapixels * 0.9)
    model = network(0)
    def warm(size):
        return compile_cache.is_warm(compile_cache.shape_key(model, torch.bfloat16, CPU, size, 2))
    assert not stylize_main.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)  # cold: eager
    compile_cache.remember([compile_cache.shape_key(model, torch.bfloat16, CPU, (64, 96), 2)])
    assert stylize_main.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)
    assert not stylize_main.compile_pays(ContentType.VIDEO, jobs, 48, CPU, warm)  # another size
    monkeypatch.setattr(config, "COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES", megapixels * 1.1)
    assert not stylize_main.compile_pays(ContentType.VIDEO, jobs, None, CPU, warm)  # too short even warm


# One stylisation process: compiles the tiny network of each seed given, prints what Inductor's
# cache did and how the compiled frames compare with eager ones, and marks its shapes warm.
CHILD = """
import json, sys
import numpy as np, torch
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from torch._dynamo.utils import counters
from conftest import TINY_NETWORK
from network.style_network import StylizingNetwork
from stylization import compile_cache
from stylization.main import remember_compiled
from stylization.processor import Processor
frames = [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(2)]
report = []
for seed in map(int, sys.argv[2:]):
    torch.manual_seed(seed)
    model = StylizingNetwork(TINY_NETWORK).eval()
    key = compile_cache.shape_key(model, None, torch.device("cpu"), (24, 40), 2)
    was_warm = compile_cache.is_warm(key)
    eager = np.stack(Processor(model, "cpu")(frames)).astype(int)
    counters.clear()
    processor = Processor(model, "cpu", compile=True, batch_size=2)
    compiled = np.stack(processor(frames)).astype(int)
    remember_compiled(processor, model, torch.device("cpu"))
    report.append({"seed": seed, "hits": counters["inductor"]["fxgraph_cache_hit"],
                   "misses": counters["inductor"]["fxgraph_cache_miss"], "was_warm": was_warm,
                   "max_diff": int(np.abs(compiled - eager).max()), "output": compiled.tolist()})
print(json.dumps(report))
"""


def run_child(cache: Path, *seeds: int) -> list[dict]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    env.pop("TORCHINDUCTOR_FX_GRAPH_CACHE", None)
    result = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), *map(str, seeds)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on the CPU builds C++ kernels: no C++ compiler here")
def test_a_second_run_reuses_the_compile_and_another_model_gets_its_own_weights(tmp_path):
    cache = tmp_path / "inductor"
    (first,) = run_child(cache, 0)
    assert first["misses"] >= 1 and first["hits"] == 0 and not first["was_warm"]
    assert first["max_diff"] <= 1
    assert any(cache.rglob("*")) and (cache / compile_cache.MARKER_FOLDER).is_dir()
    # A new process: another model of the same sizes, then the first one again.
    other, same = run_child(cache, 1, 0)
    assert other["hits"] >= 1 and other["misses"] == 0 and other["was_warm"]  # from the disk cache,
    assert other["max_diff"] <= 1  # with its own weights, not the first model's:
    difference = torch.tensor(other["output"]) - torch.tensor(first["output"])
    assert difference.abs().float().mean() > 10
    # In one process the compiled graph is reused for the next model of the same sizes (no
    # new compile at all); it too must run that model's weights.
    assert same["was_warm"] and same["max_diff"] <= 1 and same["output"] == first["output"]
