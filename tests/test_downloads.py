"""Checkpoint table, cache resolution and downloading, against a local HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from masklet.utils import downloads as D
from masklet.utils.downloads import (
    WEIGHTS,
    UnknownWeightsError,
    cache_dir,
    download,
    resolve_weights,
    variant_for_name,
)

PAYLOAD = hashlib.sha256(b"masklet").digest() * 40_000  # 1.28 MB: several read chunks


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path == "/ok.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/nolength.pt":
            # no Content-Length: the body ends when the connection closes (HTTP/1.0)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
        elif self.path == "/truncated.pt":
            # announce more than is sent, then drop the connection mid-file
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")


@pytest.fixture()
def server(monkeypatch):
    """Base URL of a threaded HTTP server on a free local port; stopped after the test."""
    # Never route the local server through a proxy from the environment.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    _Handler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A private MASKLET_HOME so no test touches the real cache."""
    folder = tmp_path / "home"
    monkeypatch.setenv("MASKLET_HOME", str(folder))
    return folder


def _no_download(url, dest, *args, **kwargs):
    raise AssertionError(f"unexpected download of {url}")


# ----------------------------------------------------------------------------- table


def test_weights_table_names_and_urls():
    sizes = {"t": "tiny", "s": "small", "b": "base_plus", "l": "large"}
    for short, size in sizes.items():
        for version, date in (("sam2", "072824"), ("sam2.1", "092824")):
            canonical = f"{version}_hiera_{size}.pt"
            url = f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{canonical}"
            assert WEIGHTS[f"{version}_{short}.pt"] == (canonical, url)
            assert WEIGHTS[canonical] == (canonical, url)
    for short, canonical in (("b", "sam_vit_b_01ec64.pth"), ("l", "sam_vit_l_0b3195.pth"), ("h", "sam_vit_h_4b8939.pth")):
        expected = (canonical, f"https://dl.fbaipublicfiles.com/segment_anything/{canonical}")
        assert WEIGHTS[f"sam_{short}.pt"] == expected
        assert WEIGHTS[canonical] == expected
    assert WEIGHTS["mobile_sam.pt"] == (
        "mobile_sam.pt",
        "https://github.com/ultralytics/assets/releases/download/v8.2.0/mobile_sam.pt",
    )
    assert len(WEIGHTS) == 8 + 8 + 6 + 1
    # every canonical name is itself an accepted name mapping to itself
    for canonical, url in WEIGHTS.values():
        assert WEIGHTS[canonical] == (canonical, url)


def test_variant_for_name():
    assert variant_for_name("sam2.1_t.pt") == "sam2.1_hiera_t"
    assert variant_for_name("sam2.1_hiera_tiny.pt") == "sam2.1_hiera_t"
    assert variant_for_name("sam2_b.pt") == "sam2_hiera_b+"
    assert variant_for_name("sam2_hiera_base_plus.pt") == "sam2_hiera_b+"
    assert variant_for_name("sam2.1_hiera_large.pt") == "sam2.1_hiera_l"
    assert variant_for_name("sam2_s.pt") == "sam2_hiera_s"
    assert variant_for_name("sam_b.pt") == "sam_vit_b"
    assert variant_for_name("sam_vit_h_4b8939.pth") == "sam_vit_h"
    assert variant_for_name("/some/dir/sam_vit_l_0b3195.pth") == "sam_vit_l"
    assert variant_for_name("mobile_sam.pt") == "mobile_sam_vit_t"
    assert variant_for_name("yolov8n.pt") is None
    # every accepted name has a variant
    assert all(variant_for_name(name) for name in WEIGHTS)


def test_cache_dir_reads_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKLET_HOME", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.setenv("MASKLET_HOME", str(tmp_path / "b"))
    assert cache_dir() == tmp_path / "b"
    monkeypatch.delenv("MASKLET_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "masklet"
    assert not (tmp_path / "user").exists()  # looking it up creates nothing


# ----------------------------------------------------------------------------- download


def test_download_complete(server, tmp_path):
    dest = tmp_path / "deep" / "folder" / "ok.pt"
    out = download(f"{server}/ok.pt", dest, progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ok.pt"]  # no temporary left behind


def test_download_without_content_length(server, tmp_path):
    dest = tmp_path / "n.pt"
    download(f"{server}/nolength.pt", dest, progress=True)
    assert dest.read_bytes() == PAYLOAD[:1000]


def test_download_replaces_existing_file_only_when_complete(server, tmp_path):
    dest = tmp_path / "x.pt"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        download(f"{server}/truncated.pt", dest, progress=False)
    assert dest.read_bytes() == b"old"
    download(f"{server}/ok.pt", dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_dropped_connection_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(tmp_path))
    dest = tmp_path / "t.pt"
    url = f"{server}/truncated.pt"
    with pytest.raises(RuntimeError) as info:
        download(url, dest, progress=False)
    msg = str(info.value)
    assert url in msg and str(dest) in msg and "MASKLET_HOME" in msg
    assert "bytes" in msg  # says why: fewer bytes than announced
    assert info.value.__cause__ is None and info.value.__suppress_context__  # raised `from None`
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary


def test_download_404(server, tmp_path):
    dest = tmp_path / "cache" / "missing.pt"
    url = f"{server}/missing.pt"
    with pytest.raises(RuntimeError) as info:
        download(url, dest, progress=False)
    msg = str(info.value)
    assert url in msg and str(dest) in msg and "MASKLET_HOME" in msg and "404" in msg
    assert info.value.__suppress_context__
    assert not dest.exists()
    assert [p for p in dest.parent.iterdir()] == []


def test_download_connection_refused(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    # bind a port and close it so nothing listens there
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}/x.pt"):
        download(f"http://127.0.0.1:{port}/x.pt", tmp_path / "x.pt", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- resolve_weights


def test_existing_path_wins(tmp_path, home, monkeypatch):
    monkeypatch.setattr(D, "download", _no_download)
    local = tmp_path / "sam2.1_t.pt"
    local.write_bytes(b"local")
    home.mkdir()
    (home / "sam2.1_hiera_tiny.pt").write_bytes(b"cached")
    assert resolve_weights(local) == local
    assert resolve_weights(str(local)) == local
    # an existing file with an unknown name is fine too
    other = tmp_path / "my_finetune.pt"
    other.write_bytes(b"x")
    assert resolve_weights(other) == other
    # relative name resolved against the working directory before the cache
    monkeypatch.chdir(tmp_path)
    assert resolve_weights("sam2.1_t.pt") == Path("sam2.1_t.pt")


def test_cache_hit_does_not_download(home, monkeypatch):
    monkeypatch.setattr(D, "download", _no_download)
    home.mkdir()
    (home / "sam2.1_hiera_base_plus.pt").write_bytes(b"canonical")
    # short name found under its canonical name, canonical name found directly
    assert resolve_weights("sam2.1_b.pt") == home / "sam2.1_hiera_base_plus.pt"
    assert resolve_weights("sam2.1_hiera_base_plus.pt") == home / "sam2.1_hiera_base_plus.pt"
    # a file stored under the short name is found before the canonical one
    (home / "sam2.1_b.pt").write_bytes(b"short")
    assert resolve_weights("sam2.1_b.pt") == home / "sam2.1_b.pt"
    # a directory part of a missing path is ignored: the known name is looked up in the cache
    assert resolve_weights("checkpoints/sam2.1_hiera_base_plus.pt") == home / "sam2.1_hiera_base_plus.pt"


def test_masklet_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "download", _no_download)
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "mobile_sam.pt").write_bytes(sub.encode())
    monkeypatch.setenv("MASKLET_HOME", str(tmp_path / "one"))
    assert resolve_weights("mobile_sam.pt").read_bytes() == b"one"
    monkeypatch.setenv("MASKLET_HOME", str(tmp_path / "two"))
    assert resolve_weights("mobile_sam.pt").read_bytes() == b"two"


def test_resolve_downloads_into_cache(server, home, monkeypatch):
    monkeypatch.setitem(WEIGHTS, "sam_b.pt", ("sam_vit_b_01ec64.pth", f"{server}/ok.pt"))
    monkeypatch.setitem(WEIGHTS, "sam_vit_b_01ec64.pth", ("sam_vit_b_01ec64.pth", f"{server}/ok.pt"))
    path = resolve_weights("sam_b.pt")
    assert path == home / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == PAYLOAD
    assert _Handler.hits == ["/ok.pt"]
    # second call: cache hit, no new request
    assert resolve_weights("sam_vit_b_01ec64.pth") == path
    assert _Handler.hits == ["/ok.pt"]


def test_resolve_download_failure_names_url_and_path(server, home, monkeypatch):
    url = f"{server}/missing.pt"
    monkeypatch.setitem(WEIGHTS, "sam2_l.pt", ("sam2_hiera_large.pt", url))
    with pytest.raises(RuntimeError) as info:
        resolve_weights("sam2_l.pt")
    msg = str(info.value)
    assert url in msg and str(home / "sam2_hiera_large.pt") in msg and "MASKLET_HOME" in msg
    assert not (home / "sam2_hiera_large.pt").exists()


def test_resolve_without_download(home, monkeypatch):
    monkeypatch.setattr(D, "download", _no_download)
    with pytest.raises(FileNotFoundError) as info:
        resolve_weights("sam2.1_l.pt", download=False)
    msg = str(info.value)
    assert WEIGHTS["sam2.1_l.pt"][1] in msg and str(home / "sam2.1_hiera_large.pt") in msg


def test_unknown_name(home, monkeypatch):
    monkeypatch.setattr(D, "download", _no_download)
    with pytest.raises(UnknownWeightsError) as info:
        resolve_weights("sam2.1_hiera_tinny.pt")
    msg = str(info.value)
    assert "Did you mean 'sam2.1_hiera_tiny.pt'" in msg
    assert "mobile_sam.pt" in msg and "sam_vit_h_4b8939.pth" in msg  # lists the known names
    # catchable as either documented type
    with pytest.raises(FileNotFoundError):
        resolve_weights("nonexistent_model.pt")
    with pytest.raises(ValueError):
        resolve_weights(os.path.join("no", "such", "thing.bin"))
