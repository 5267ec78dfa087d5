"""Datasets a newcomer can get: ``mpicomp data fetch NAME`` downloads them into a cache, checked.

The cache is ``$MPICOMP_DATA``, else ``$XDG_CACHE_HOME/mpicomp``, else ``~/.cache/mpicomp``; MNIST
lives in ``CACHE/mnist/`` (the four idx ``.gz`` files), a LIBSVM set in ``CACHE/NAME`` (``NAME.gz``
or ``NAME.bz2`` are found too). Configs then say ``dataset = "mnist"`` or ``"libsvm:a9a"``.

A download goes to a temporary file beside its destination, is hashed as it arrives, and is renamed
into place only when its SHA-256 equals the one written here; any error (unreachable host, truncated
transfer, wrong checksum) deletes the temporary file, so the cache never holds half a file. A file
whose SHA-256 mpicomp does not know (``sha256=None``) is stored on first download with a warning,
and its hash is recorded in ``CACHE/SHA256SUMS`` (``sha256sum`` format) to check later downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "MPICOMP_DATA"
SUMS_FILE = "SHA256SUMS"
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist"  # TensorFlow's copy of yann.lecun.com/exdb/mnist
LIBSVM_BINARY = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary"


class FetchError(RuntimeError):
    """A download failed or did not match its checksum; the message says which file and why."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it goes (relative to the cache), where it comes from, its SHA-256."""

    path: str
    url: str
    sha256: str | None  # None: mpicomp has no checksum for it (recorded on first download)


@dataclass(frozen=True)
class KnownDataset:
    name: str
    spec: str  # what a config's [problem] dataset says to use it
    description: str
    files: tuple[RemoteFile, ...]


# MNIST: the SHA-256 of the four canonical .gz files as published for the original files and their
# mirrors (the same four values appear in many independent projects). They could not be checked
# from this machine (no access to the hosts), and the developers' local copies are re-compressed
# files (other bytes, same idx content), so they do not match them either.
MNIST = KnownDataset(
    "mnist",
    "mnist",
    "MNIST digits: 60,000 + 10,000 test images 28x28, 10 classes (LeCun, Cortes, Burges; CC BY-SA 3.0)",
    (
        RemoteFile(
            "mnist/train-images-idx3-ubyte.gz",
            f"{MNIST_MIRROR}/train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        RemoteFile(
            "mnist/train-labels-idx1-ubyte.gz",
            f"{MNIST_MIRROR}/train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        RemoteFile(
            "mnist/t10k-images-idx3-ubyte.gz",
            f"{MNIST_MIRROR}/t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        RemoteFile(
            "mnist/t10k-labels-idx1-ubyte.gz",
            f"{MNIST_MIRROR}/t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
)
# LIBSVM binary sets (Chang & Lin), uncompressed text on the server. a9a: the SHA-256 of the
# developers' copy (a9a.gz, gzip of a file named "a9a", 32,561 rows) decompressed, 2,289,473 bytes;
# that equals the server's file only if the copy was made from it unchanged, which could not be
# checked from this machine. w8a, mushrooms, phishing: no checksum known here (recorded on first
# download, with a warning).
LIBSVM = tuple(
    KnownDataset(name, f"libsvm:{name}", description, (RemoteFile(name, f"{LIBSVM_BINARY}/{name}", sha256),))
    for name, description, sha256 in (
        (
            "a9a",
            "UCI Adult, binarised: 32,561 x 123 sparse, labels +-1",
            "3f9bc88f37091ec892cda9f4514c7126b8ec4484ee281653d98363775290c860",
        ),
        ("w8a", "web page classification: 49,749 x 300 sparse, labels +-1", None),
        ("mushrooms", "UCI mushrooms: 8,124 x 112, labels 1/2", None),
        ("phishing", "phishing websites: 11,055 x 68, labels 0/1", None),
    )
)
KNOWN = {dataset.name: dataset for dataset in (MNIST, *LIBSVM)}
LIBSVM_NAMES = tuple(dataset.name for dataset in LIBSVM)
COMPRESSED_SUFFIXES = ("", ".gz", ".bz2")


def data_home() -> Path:
    """The dataset cache: ``$MPICOMP_DATA``, else ``$XDG_CACHE_HOME/mpicomp``, else ``~/.cache/mpicomp``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mpicomp"


def fetch_hint(name: str) -> str:
    return f"get it with: mpicomp data fetch {name} (cache: {data_home()}, set {CACHE_ENV} to move it)"


def cached_path(name: str, home: Path | None = None) -> Path:
    """Where a known dataset is in the cache: MNIST's folder, or the LIBSVM file (also ``.gz``,
    ``.bz2``); FileNotFoundError with the fetch command when it is missing."""
    home = data_home() if home is None else home
    if name == MNIST.name:
        folder = home / "mnist"
        stems = [Path(remote.path).stem for remote in MNIST.files]  # the idx name without .gz
        if all((folder / stem).is_file() or (folder / f"{stem}.gz").is_file() for stem in stems):
            return folder
    elif name in LIBSVM_NAMES:
        for suffix in COMPRESSED_SUFFIXES:
            if (home / f"{name}{suffix}").is_file():
                return home / f"{name}{suffix}"
    else:
        raise KeyError(name)
    raise FileNotFoundError(f"dataset {name!r} is not in the cache; {fetch_hint(name)}")


def _recorded(home: Path) -> dict[str, str]:
    sums = home / SUMS_FILE
    if not sums.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in sums.read_text(encoding="utf-8").splitlines() if line.strip())
    return {path.strip(): digest for digest, path in pairs}


def _record(home: Path, path: str, digest: str) -> None:
    recorded = {**_recorded(home), path: digest}
    temporary = home / f".{SUMS_FILE}.{os.getpid()}.tmp"
    temporary.write_text("".join(f"{d}  {p}\n" for p, d in sorted(recorded.items())), encoding="utf-8")
    os.replace(temporary, home / SUMS_FILE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, expected: str | None) -> str:
    """Download ``url`` to ``destination`` through a temporary file, renamed only when complete and
    (if ``expected`` is given) of that SHA-256; returns the SHA-256. FetchError otherwise, with no
    file left behind."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(temporary, "wb") as stream:
            announced = response.headers.get("Content-Length")
            received = 0
            while block := response.read(CHUNK_BYTES):
                digest.update(block)
                stream.write(block)
                received += len(block)
        if announced is not None and received != int(announced):
            raise FetchError(f"{url}: the download stopped after {received} of {announced} bytes; try again")
        if expected is not None and digest.hexdigest() != expected:
            raise FetchError(
                f"{url}: SHA-256 {digest.hexdigest()} is not the expected {expected}; the file was not stored "
                "(a changed or corrupted download: try again, or download it yourself and give its path)"
            )
        os.replace(temporary, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"{url}: download failed ({reason}); nothing was stored") from None
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest()


def fetch(name: str, home: Path | None = None, mirror: str | None = None, echo: Callable[[str], None] = print) -> Path:
    """Make sure every file of dataset ``name`` is in the cache and matches its checksum; returns
    the path a config uses (:func:`cached_path`). ``mirror`` replaces the host: a URL (``http://``,
    ``file://``) of a folder holding the files under their own names."""
    if name not in KNOWN:
        raise FetchError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")
    home = data_home() if home is None else home
    for remote in KNOWN[name].files:
        destination = home / remote.path
        expected = remote.sha256 or _recorded(home).get(remote.path)
        if destination.is_file():
            found = sha256_of(destination)
            if expected is not None and found != expected:
                raise FetchError(
                    f"{destination} is in the cache but its SHA-256 {found} is not the expected {expected}; "
                    "delete it and fetch again"
                )
            echo(f"{remote.path}: already in {home}" + (", checksum ok" if expected else ""))
            continue
        url = f"{mirror.rstrip('/')}/{Path(remote.url).name}" if mirror else remote.url
        echo(f"{remote.path}: downloading {url}")
        digest = download(url, destination, expected)
        if expected is None:
            _record(home, remote.path, digest)
            echo(
                f"warning: mpicomp has no checksum for {remote.path}; stored it with SHA-256 {digest} "
                f"(recorded in {home / SUMS_FILE}; compare it with a trusted copy)"
            )
        else:
            echo(f"{remote.path}: checksum ok")
    return cached_path(name, home)


def listing(home: Path | None = None) -> str:
    """One line per known dataset: name, the config's dataset string, present or not, description."""
    home = data_home() if home is None else home
    lines = [f"cache: {home} (set {CACHE_ENV} to move it)"]
    for dataset in KNOWN.values():
        try:
            where = f"present ({cached_path(dataset.name, home)})"
        except FileNotFoundError:
            where = "missing"
        lines.append(f"  {dataset.name:10s} dataset = {dataset.spec!r:18s} {where}\n  {'':10s} {dataset.description}")
    return "\n".join(lines)
