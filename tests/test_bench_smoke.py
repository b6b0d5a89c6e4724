"""Smoke test of the benchmark scripts: each runs with --quick on the tiny test variant and prints one JSON
object with the keys the issue asks for. Numbers are not checked (they depend on the machine)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, data_file, run_bench_script

# one thread: on a busy shared CPU, OpenMP threads waiting on each other make tiny models 10x slower
COMMON = ["--quick", "--model", "sam2_test", "--device", "cpu", "--threads", "1"]


SCRIPTS = {
    "encode.py": ["--imgsz", "128"],
    "decode.py": ["--points", "3", "--boxes", "2"],
    "video.py": ["--frames", "3", "--objects", "1", "3"],
    "video_memory.py": ["--frames", "5", "--interactive-frames", "4"],
}


@pytest.fixture(scope="module")
def runs():
    """All four scripts started at once: most of each run is importing torch, which overlaps well."""
    data_file("images/truck.jpg")
    data_file("videos/bedroom.mp4")
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "bench" / name), *COMMON, *extra], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, extra in SCRIPTS.items()}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_bench(runs: dict, script: str) -> dict:
    proc = runs[script]
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{stderr[-3000:]}"
    result = json.loads(stdout)  # stdout must be exactly one JSON object
    assert {"benchmark", "machine", "settings"} <= set(result)
    assert {"torch", "device", "device_name", "cpu_count", "torch_threads", "dtype"} <= set(result["machine"])
    return result


def test_encode(runs):
    result = run_bench(runs, "encode.py")
    (row,) = result["results"]
    assert "error" not in row, row.get("error")
    assert {"params_m", "checkpoint_mb_fp32", "encode_s", "gflops", "gflops_per_s", "compile"} <= set(row)
    assert row["imgsz"] == 128 and row["gflops"] > 0 and row["encode_s"] > 0


def test_decode(runs):
    result = run_bench(runs, "decode.py")
    assert set(result["cases"]) == {"point_1", "points_3", "boxes_2"}
    for case in result["cases"].values():
        assert {"predict_ms", "predict_tensors_ms", "decoder_ms"} <= set(case), case
    assert result["cases"]["points_3"]["prompts"] == 3
    assert result["set_image_s"] > 0


def test_video(runs):
    result = run_bench(runs, "video.py")
    for mode in ("batched", "sequential"):
        runs = result["runs"][mode]
        assert [r["objects"] for r in runs] == [1, 3]
        assert all("error" not in r and r["s_per_frame"] > 0 and r["frames"] == 3 for r in runs), runs
        assert result["summary"][mode]["ratio_3_to_1"] > 0
    assert result["memory"]["peak_rss_mb"] > 0


def test_video_memory(runs):
    result = run_bench(runs, "video_memory.py")
    stream, interactive = result["stream"], result["interactive"]
    assert "error" not in stream and "error" not in interactive, (stream.get("error"), interactive.get("error"))
    assert {"peak_rss_mb_at_check", "peak_rss_mb_at_end", "peak_ratio", "passed"} <= set(stream)
    assert stream["at_end"]["frame"] == 5 and stream["kept_at_end"]["objects"] == 2
    assert {"mb_per_frame", "reference_mb_per_frame", "state_mb_per_frame", "passed"} <= set(interactive)
    assert len(interactive["rss_mb"]) == 4
    one_pass = result["one_pass"]["entries"]
    assert set(one_pass) == {"call_file", "call_folder", "annotate_video", "val_folder"}
    for name, entry in one_pass.items():
        assert "error" not in entry and entry["one_pass_calls"] and all(entry["one_pass_calls"]), (name, entry)
        assert entry["frames_tracked"] == 5 and {"rss_mb_at_end", "state_mb_growth", "passed"} <= set(entry)


def _run_alone(script: str, *extra: str) -> dict:
    result = run_bench_script(script, *COMMON, *extra)
    assert {"cpu_capability", "cpu_flags", "torch_threads"} <= set(result["machine"])
    return result


def test_int8_bench_times_quantized_chains():
    result = _run_alone("int8.py", "--parts", "decoder", "--repeats", "1", "--no-accuracy")
    row = result["parts"]["decoder"]
    assert "int8" in row["paths"] and "float32" in row["paths"], row["paths"].keys()
    assert all(v > 0 for v in row["speedup_vs_float32_cpu_time"].values())


def test_compiled_bench_compares_eager_and_inductor():
    result = _run_alone("compiled.py", "--parts", "decoder", "--dtypes", "float32", "--repeats", "1")
    ((key, row),) = result["parts"].items()
    assert "compile_error" not in row, row.get("compile_error")
    assert row["compile"]["wall_s"] > 0 and row["compiled_speedup_cpu_time"]["compiled"] > 0
    assert row["max_rel_diff"] < 1e-3, (key, row["max_rel_diff"])  # inductor computes the same chain


def test_versus_bench_against_itself():
    data_file("videos/bedroom.mp4")
    result = _run_alone("versus.py", "--base", "masklet", "--parts", "decoder", "--frames", "2", "--repeats", "1")
    assert set(result["parts"]["decoder"]["paths"]) == {"masklet", "this tree"}


def test_bench_random_weights_are_the_fixtures():
    """The benches' random weights of sam2.1_hiera_t, seed 21, are the reference fixtures' checkpoint bit for
    bit: drawn in the manifest's key order (masklet's own state_dict order drew other decoder weights, and
    bench/gpu.py then compared the official outputs with another model's)."""
    from conftest import reference_state_dict

    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    expected = reference_state_dict()
    model, how = common.random_model("sam2.1_hiera_t", 21)
    got = model.state_dict()
    assert "seed 21" in how and set(got) == set(expected)
    differing = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differing, f"{len(differing)} entries differ, first {differing[:3]}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_bench_says_it_needs_cuda():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode != 0 and "needs a CUDA GPU" in run.stderr
