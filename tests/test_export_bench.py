"""Smoke test of bench/export.py: --quick on the tiny test variant prints one JSON object with the timings the
issue asks for (numbers are not checked: they depend on the machine)."""
import pytest
from conftest import data_file, run_bench_script

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")


def test_export_bench_quick():
    data_file("images/truck.jpg")
    data_file("videos/bedroom_frames/00000.jpg")
    result = run_bench_script("export.py", "--quick", "--model", "sam2_test", "--device", "cpu", "--threads", "1",
                              "--imgsz", "128", "--frames", "2", timeout=900)
    for backend in ("torch", "onnx_fp32", "onnx_int8"):
        assert result["image"][backend]["encode_s"]["n"] == 2 and result["image"][backend]["decode_point_ms"] > 0
        assert result["video"][f"{backend}_1obj"]["s_per_frame"]["n"] == 1
    bank = result["memory_bank"]
    assert bank["full"]["max_abs_diff"] < 1e-3 and bank["early"]["dynamic_ms"] > 0
