"""``mpicomp data fetch`` / ``data list`` and the cached datasets, without the network.

Files are served by a local HTTP server on 127.0.0.1 (or a ``file://`` folder); the known datasets'
entries are replaced by test ones whose checksums are computed here from the served bytes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from mpicomp.cli import main
from mpicomp.data import fetch as fetching
from mpicomp.data.fetch import FetchError, KnownDataset, RemoteFile, fetch
from mpicomp.data.loaders import load_dataset

SVM = b"".join(b"%d 1:%d 2:%.1f\n" % (1 if i % 2 else -1, i, i / 10) for i in range(40))
SHARED_A9A = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "a9a.gz"


class Server(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/short/NAME`` announces NAME's full length but sends half of it and closes."""

    def log_message(self, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def served(tmp_path):
    """A folder served on 127.0.0.1: yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Server, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def tiny(monkeypatch, served):
    """A known LIBSVM set ``tiny`` (its file ``a9a`` in the cache) with the SHA-256 of the served bytes."""
    folder, _ = served
    (folder / "a9a").write_bytes(SVM)
    known = {"a9a": KnownDataset("a9a", "libsvm:a9a", "test", (RemoteFile("a9a", "https://x/a9a", sha256(SVM)),))}
    monkeypatch.setattr(fetching, "KNOWN", known)
    return served


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_fetch_stores_a_checked_download_and_configs_find_it(tiny, tmp_path, monkeypatch, capsys):
    _, url = tiny
    cache = tmp_path / "cache"
    monkeypatch.setenv("MPICOMP_DATA", str(cache))
    with pytest.raises(
        FileNotFoundError, match=r"dataset 'a9a' is not in the cache; get it with: mpicomp data fetch a9a"
    ):
        load_dataset("libsvm:a9a")
    assert main(["data", "fetch", "a9a", "--mirror", url]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "a9a: checksum ok",
        "a9a is ready: dataset = 'libsvm:a9a' in a config",
    ]
    assert cache_files(cache) == ["a9a"]
    data = load_dataset("libsvm:a9a")
    np.testing.assert_array_equal(data.y, [1 if i % 2 else -1 for i in range(40)])
    assert main(["data", "fetch", "a9a", "--mirror", "http://127.0.0.1:1"]) == 0  # present: no download
    assert "a9a: already in" in capsys.readouterr().out


def test_a_wrong_checksum_is_refused_and_nothing_is_stored(tiny, tmp_path, capsys):
    folder, url = tiny
    (folder / "a9a").write_bytes(SVM.replace(b"1:3", b"1:4"))
    cache = tmp_path / "cache"
    assert main(["data", "fetch", "a9a", "--dir", str(cache), "--mirror", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is not the expected {sha256(SVM)}; the file was not stored" in err
    assert cache_files(cache) == []


def test_a_truncated_download_is_refused_and_nothing_is_stored(tiny, tmp_path):
    _, url = tiny
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="a9a: (download failed|the download stopped)"):
        fetch("a9a", cache, f"{url}/short", echo=lambda line: None)
    assert cache_files(cache) == []


def test_an_unreachable_host_is_one_line_and_nothing_is_stored(tiny, tmp_path, capsys):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "cache"
    assert main(["data", "fetch", "a9a", "--dir", str(cache), "--mirror", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mpicomp: data fetch: http://127.0.0.1:{port}/a9a: download failed (")
    assert err.endswith("; nothing was stored\n") and err.count("\n") == 1
    assert cache_files(cache) == []


def test_a_file_without_a_known_checksum_is_recorded_with_a_warning_and_checked_next_time(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "w8a").write_bytes(SVM)
    known = {"w8a": KnownDataset("w8a", "libsvm:w8a", "test", (RemoteFile("w8a", "https://x/w8a", None),))}
    monkeypatch.setattr(fetching, "KNOWN", known)
    cache = tmp_path / "cache"
    mirror = folder.as_uri()  # file:// base URL
    assert main(["data", "fetch", "w8a", "--dir", str(cache), "--mirror", mirror]) == 0
    assert f"warning: mpicomp has no checksum for w8a; stored it with SHA-256 {sha256(SVM)}" in capsys.readouterr().out
    assert (cache / "SHA256SUMS").read_text() == f"{sha256(SVM)}  w8a\n"
    (cache / "w8a").unlink()
    (folder / "w8a").write_bytes(SVM + b"1 1:1\n")  # the server's file changed since
    assert main(["data", "fetch", "w8a", "--dir", str(cache), "--mirror", mirror]) == 2
    assert "is not the expected" in capsys.readouterr().err
    assert cache_files(cache) == ["SHA256SUMS"]


def test_list_says_what_is_known_and_present(tmp_path, capsys):
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "w8a.bz2").write_bytes(b"")
    assert main(["data", "list", "--dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"cache: {cache} (set MPICOMP_DATA to move it)"
    lines = {line.split()[0]: line for line in out.splitlines()[1::2]}
    assert list(lines) == ["mnist", "a9a", "w8a", "mushrooms", "phishing"]
    assert lines["mnist"].endswith("missing")  # a folder without the four files
    assert lines["w8a"].endswith(f"present ({cache / 'w8a.bz2'})")


def test_a_config_saying_mnist_reads_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    for name, count, magic, dims in (("train", 6, 0x803, (28, 28)), ("t10k", 2, 0x803, (28, 28))):
        images = np.arange(count * 784, dtype=np.uint8)
        header = b"".join(int(v).to_bytes(4, "big") for v in (magic, count, *dims))
        (folder / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        labels = np.arange(count, dtype=np.uint8) % 10
        header = b"".join(int(v).to_bytes(4, "big") for v in (0x801, count))
        (folder / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))
    monkeypatch.setenv("MPICOMP_DATA", str(cache))
    data = load_dataset("mnist", stored=True)
    assert data.X.shape == (6, 784) and data.X_test.shape == (2, 784)
    np.testing.assert_array_equal(data.y, [0, 1, 2, 3, 4, 5])


@pytest.mark.skipif(not SHARED_A9A.is_file(), reason="the developers' a9a copy is not here")
def test_the_a9a_checksum_is_that_of_the_developers_copy(tmp_path):
    """The package's a9a SHA-256 was computed from this copy (decompressed); it is served as the
    uncompressed file the LIBSVM server has."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "a9a").write_bytes(gzip.decompress(SHARED_A9A.read_bytes()))
    path = fetch("a9a", tmp_path / "cache", folder.as_uri(), echo=lambda line: None)
    assert load_dataset(f"libsvm:{path}", n_features=123).X.shape == (32561, 123)


def test_a_run_finds_a_cached_dataset_and_a_missing_one_is_one_line_naming_the_fetch_command(
    tmp_path, monkeypatch, capsys
):
    config = tmp_path / "run.toml"
    config.write_text('[problem]\ndataset = "libsvm:a9a"\n[data]\nworkers = 2\n[run]\nrounds = 2\noptimum = false\n')
    cache = tmp_path / "cache"
    monkeypatch.setenv("MPICOMP_DATA", str(cache))
    args = ["run", str(config), "--out", str(tmp_path / "r.h5"), "--no-progress", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset 'a9a' is not in the cache; get it with: mpicomp data fetch a9a" in err
    cache.mkdir()
    (cache / "a9a.gz").write_bytes(gzip.compress(SVM))
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("finished: 2 rounds done")
