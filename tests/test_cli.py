"""The `masklet` command line: the documented command, key=value parsing, help, and clean errors.

Commands that need a model run as real subprocesses (`python -m masklet.cli`) with MASKLET_HOME pointing at
a temporary folder that holds the weights under the command's file name; the rest call `main()` in-process.
"""
import os
import shutil
import subprocess
import sys

import cv2
import pytest
from conftest import ROOT, data_file, reference_file, small_checkpoint_home

from masklet.cli import main, parse_value


def run_cli(args, home, cwd, extra_env=None, timeout=300):
    env = {**os.environ, "MASKLET_HOME": str(home), "PYTHONPATH": str(ROOT), **(extra_env or {})}
    env.pop("MASKLET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "masklet.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    return small_checkpoint_home(tmp_path_factory.mktemp("cli_home"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One frame of bedroom.mp4 at 320x180."""
    path = tmp_path_factory.mktemp("cli_clip") / "video.mp4"
    cap = cv2.VideoCapture(str(data_file("videos/bedroom.mp4")))
    _, frame = cap.read()
    cap.release()
    frame = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 180))
    writer.write(frame)
    writer.release()
    return path


def test_documented_command(small_home, clip, tmp_path):
    """masklet predict model=sam2.1_b.pt source=path/to/video.mp4 -> runs/segment/predict2 when predict exists."""
    (tmp_path / "runs" / "segment" / "predict").mkdir(parents=True)
    proc = run_cli(["predict", "model=sam2.1_b.pt", f"source={clip}"], small_home, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "segment" / "predict2" / "video.mp4"
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 1
    cap.release()
    assert "video 1/1 (frame 1/1)" in proc.stdout and "Results saved to runs/segment/predict2" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_predict_prompts_in_process(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(reference_file("sam2.1_hiera_t_random.pt"), home / "sam2.1_t.pt")
    monkeypatch.setenv("MASKLET_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    truck = data_file("images/truck.jpg")
    # no model=: the default sam2.1_t.pt; a list split by the shell is joined again
    code = main(["predict", f"source={truck}", "points=[[400,", "370],[900,370]]", "labels=[1,1]", "imgsz=512",
                 "save_txt", "name=exp"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "2 masks" in out and "Results saved to runs/segment/exp" in out
    assert (tmp_path / "runs" / "segment" / "exp" / "truck.jpg").is_file()
    lines = (tmp_path / "runs" / "segment" / "exp" / "labels" / "truck.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]


def test_track_in_process(small_home, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    monkeypatch.chdir(tmp_path)
    code = main(["track", "model=sam2.1_b.pt", f"source={clip}", "points=[[100,100],[200,120]]", "labels=[1,1]",
                 "save=False"])
    assert code == 0, capsys.readouterr().err
    assert "video 1/1 (frame 0)" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_info(small_home, capsys, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    assert main(["info", "model=sam2.1_b.pt"]) == 0
    assert "sam2_test summary:" in capsys.readouterr().out


def test_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(mode in text for mode in ("predict", "track", "info", "annotate", "val"))
    assert main(["predict", "help"]) == 0
    text = capsys.readouterr().out
    from masklet.api import PREDICT_ARGS

    keys = [k for k in PREDICT_ARGS if k not in ("masks", "stream", "frame")]
    assert all(f"  {k}=" in text for k in keys)
    assert main(["help", "track"]) == 0 and "frame=" in capsys.readouterr().out
    assert main([]) == 0 and "usage: masklet" in capsys.readouterr().out


def test_help_without_torch(tmp_path):
    """`masklet --help` and key errors answer without importing torch (seconds on a cold start)."""
    code = ("import sys; from masklet.cli import main; main(['--help']); main(['predict', 'sorce=x']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["predict", "sorce=image.jpg"], "'sorce' is not a valid key for 'masklet predict'. Did you mean 'source'?"),
    (["predict", "imgsize=512"], "Did you mean 'imgsz'?"),
    (["predcit"], "Did you mean 'predict'?"),
    (["predict", "points=[1,2"], "cannot parse points=[1,2"),
    (["predict", "save=yes"], "save=yes must be True or False"),
    (["predict", "source"], "'source' needs a value"),
    (["track", "model=sam2.1_b.pt"], "give points= (with labels=) or bboxes="),  # no source: the demo clip
    (["track", "multimask_output=True"], "not a valid key for 'masklet track'"),
    (["predict", "source=x.jpg", "source=y.jpg"], "source is given twice"),
])
def test_usage_errors(args, message, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_bad_values_exit_2(small_home, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    monkeypatch.chdir(tmp_path)
    cases = [
        (["predict", "model=sam2.1_bb.pt", f"source={clip}"], "Did you mean 'sam2.1_b.pt'"),
        (["predict", "model=sam2.1_b.pt", "source=missing.jpg", "points=[1,1]"], "source not found"),
        (["predict", "model=sam2.1_b.pt", f"source={clip}", "points=[1,1]", "labels=[1,1]"],
         "labels shape (2,) does not match points shape (2,)"),
        (["predict", "model=sam2.1_b.pt", f"source={clip}", "points=[1,1]", "imgsz=100"], "multiple of 64"),
        (["predict", "model=sam2.1_b.pt", f"source={clip}", "bboxes=[1,2,3]"], "got shape (3,)"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("masklet: error:"), (args, err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs" / "segment").glob("*/*.jpg"))


def test_download_failure_says_what_to_do(tmp_path):
    """No weights and no network: one message with the URL and where to put the file, exit 1."""
    home = tmp_path / "empty_home"
    proxy = "http://127.0.0.1:9"  # nothing listens there: the download fails at once
    proc = run_cli(["predict", f"source={data_file('images/truck.jpg')}"], home, tmp_path,
                   {"https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "HTTP_PROXY": proxy})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "sam2.1_hiera_tiny.pt" in proc.stderr and str(home) in proc.stderr and "MASKLET_HOME" in proc.stderr


def test_unavailable_modes_or_wired(capsys, monkeypatch):
    import importlib.util

    for mode, module in (("annotate", "masklet.api.annotate"), ("val", "masklet.val")):
        code = main([mode, "help"])
        out = capsys.readouterr().out
        assert code == 0 and f"masklet {mode}" in out
        if importlib.util.find_spec(module) is None:
            assert main([mode]) == 2
            assert "not available" in capsys.readouterr().err


def test_external_mode_is_called(monkeypatch, capsys):
    import types

    calls = []

    def run(data, model="x.pt", save=False):
        """Fake evaluation."""
        calls.append((data, model, save))

    fake = types.ModuleType("masklet.val")
    fake.run = run
    monkeypatch.setitem(sys.modules, "masklet.val", fake)
    assert main(["val", "data=davis", "save=True"]) == 0
    assert calls == [("davis", "x.pt", True)]
    assert main(["val", "dta=davis"]) == 2
    assert "Did you mean 'data'?" in capsys.readouterr().err
    assert main(["val"]) == 2 and "needs data=" in capsys.readouterr().err


def test_parse_value():
    assert parse_value("points", "[900,370]") == [900, 370]
    assert parse_value("labels", "1") == 1
    assert parse_value("save", "true") is True and parse_value("device", "None") is None
    assert parse_value("model", "sam2.1_b.pt") == "sam2.1_b.pt"
    assert parse_value("source", "path/to/video.mp4") == "path/to/video.mp4"
    assert parse_value("conf", "0.5") == 0.5


def test_missing_extra_is_a_one_line_error(monkeypatch, capsys):
    """A mode whose optional extra is not installed ends with `masklet: error: ... pip install ...`, exit 1,
    not a traceback."""
    import masklet.app as app

    def no_fastapi(*args, **kwargs):
        raise ImportError("masklet app needs fastapi: pip install 'masklet[app]'")

    monkeypatch.setattr(app, "app_cli", no_fastapi)
    assert main(["app", "source=."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("masklet: error: masklet app needs fastapi") and "Traceback" not in err


def test_app_extra_check_names_each_missing_package(monkeypatch):
    """The [app] check finds its packages without importing them (python-multipart's old `multipart` alias warns
    on import) and names every missing one with the pip command."""
    import importlib.util
    import warnings

    import masklet.app as app

    find_spec = importlib.util.find_spec
    for gone, named in ((("uvicorn",), "uvicorn"), (("python_multipart", "multipart"), "python-multipart")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, gone=gone: None if name in gone
                            else find_spec(name, *a))
        with pytest.raises(ImportError, match=f"masklet app needs {named}: pip install 'masklet\\[app\\]'"):
            app._require_extra()
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    if find_spec("fastapi") and find_spec("uvicorn") and find_spec("python_multipart"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            app._require_extra()  # all there: no error and no deprecation warning
