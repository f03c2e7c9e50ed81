"""A faithful copy of PyTorch's package index (download.pytorch.org/whl/<variant>/), served on 127.0.0.1.

What it copies, from PyTorch's real index as measured:
- PEP 503 HTML pages only: `/whl/<variant>/` lists projects, `/whl/<variant>/<project>/` lists files;
  hrefs are root-relative (`/whl/cu121/torch-2.5.1%2Bcu121-...whl`) with `#sha256=` fragments and
  `data-requires-python`; no upload times (the HTML API has none, and the index serves no PEP 691
  JSON, whatever the Accept header asks).
- Wheels under PyTorch's own file names and tags: `torch-2.5.1+cu121-cp311-cp311-linux_x86_64.whl`
  (the `linux_x86_64` tag, not manylinux), triton and xformers under their manylinux tags.
- The other projects that index also serves, under the same or older versions than PyPI's
  (nvidia-*, filelock, typing-extensions, sympy, jinja2, fsspec, networkx, numpy, pillow, and
  requests 2.28.1): a resolution that looked them up here instead of on PyPI shows, because every
  file here is a stub whose sha256 is nobody else's.

The wheels are stubs (a few hundred bytes): a module that says it is a stub, and METADATA carrying
the real Requires-Dist of the release, which is what a resolver reads. Where each came from:
- torch 2.5.1+cu121 / +cu118: torch 2.5.1's METADATA on PyPI (the cu124 build, fetched from
  files.pythonhosted.org), whose CUDA pins are replaced by the +cu121 / +cu118 builds' own, from
  PYTORCH_EXTRA_INSTALL_REQUIREMENTS in pytorch/pytorch v2.5.1
  `.github/scripts/generate_binary_build_matrix.py` (CUDA 12.1 and 11.8 entries); the +cu118
  build names no nvjitlink and no triton constraint beyond the same `triton==3.1.0`.
- torchvision 0.20.1, triton 3.1.0, xformers 0.0.29.post1: the METADATA of their PyPI wheels
  (cp311, x86_64), read from the wheels themselves.

`add_real_wheel` serves a real wheel beside them (the cpu stack's torch, from a local wheel folder).

`python -m tests.pytorch_index DIR` serves one by hand and prints its URL.
"""

from __future__ import annotations

import hashlib
import html
import http.server
import io
import sys
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.stacks import normalize

LINUX = 'platform_system == "Linux" and platform_machine == "x86_64"'
TORCH_COMMON = ["filelock", "typing-extensions>=4.8.0", "networkx", "jinja2", "fsspec"]
TORCH_TAIL = [
    'triton==3.1.0; platform_system == "Linux" and platform_machine == "x86_64" and python_version < "3.13"',
    'sympy==1.12.1; python_version == "3.8"',
    'setuptools; python_version >= "3.12"',
    'sympy==1.13.1; python_version >= "3.9"',
    "opt-einsum>=3.3; extra == 'opt-einsum'",
    "optree>=0.12.0; extra == 'optree'",
]
CUDA_121 = {
    "nvidia-cuda-nvrtc-cu12": "12.1.105", "nvidia-cuda-runtime-cu12": "12.1.105", "nvidia-cuda-cupti-cu12": "12.1.105",
    "nvidia-cudnn-cu12": "9.1.0.70", "nvidia-cublas-cu12": "12.1.3.1", "nvidia-cufft-cu12": "11.0.2.54",
    "nvidia-curand-cu12": "10.3.2.106", "nvidia-cusolver-cu12": "11.4.5.107", "nvidia-cusparse-cu12": "12.1.0.106",
    "nvidia-nccl-cu12": "2.21.5", "nvidia-nvtx-cu12": "12.1.105",
}
CUDA_118 = {
    "nvidia-cuda-nvrtc-cu11": "11.8.89", "nvidia-cuda-runtime-cu11": "11.8.89", "nvidia-cuda-cupti-cu11": "11.8.87",
    "nvidia-cudnn-cu11": "9.1.0.70", "nvidia-cublas-cu11": "11.11.3.6", "nvidia-cufft-cu11": "10.9.0.58",
    "nvidia-curand-cu11": "10.3.0.86", "nvidia-cusolver-cu11": "11.4.1.48", "nvidia-cusparse-cu11": "11.7.5.86",
    "nvidia-nccl-cu11": "2.21.5", "nvidia-nvtx-cu11": "11.8.86",
}
CP311_LINUX = "cp311-cp311-linux_x86_64"
MANYLINUX_2014 = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
PURE = "py3-none-any"
NVIDIA = "py3-none-manylinux2014_x86_64"


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    tag: str
    requires: tuple[str, ...] = ()
    requires_python: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-{self.tag}.whl"


def _torch(variant: str, cuda: dict[str, str]) -> Release:
    pins = [f"{name}=={version}; {LINUX}" for name, version in cuda.items()]
    return Release("torch", f"2.5.1+{variant}", CP311_LINUX, (*TORCH_COMMON, *pins, *TORCH_TAIL), ">=3.8.0")


# PyTorch's projects, then the others its index serves too (stubs that a right resolution never takes).
SHARED = [
    Release("triton", "3.1.0", MANYLINUX_2014, ("filelock",)),
    Release("filelock", "3.13.1", PURE), Release("typing-extensions", "4.9.0", PURE), Release("sympy", "1.13.1", PURE),
    Release("jinja2", "3.1.4", PURE), Release("fsspec", "2024.6.1", PURE), Release("networkx", "3.3", PURE),
    Release("numpy", "1.26.3", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"),
    Release("pillow", "10.2.0", "cp311-cp311-manylinux_2_28_x86_64"), Release("requests", "2.28.1", PURE),
]
VARIANTS = {
    "cu121": [
        _torch("cu121", CUDA_121),
        Release("torchvision", "0.20.1+cu121", CP311_LINUX, ("numpy", "torch==2.5.1", "pillow!=8.3.*,>=5.3.0",
                                                              "gdown>=4.7.3; extra == 'gdown'", "scipy; extra == 'scipy'"), ">=3.8"),
        Release("xformers", "0.0.29.post1", "cp311-cp311-manylinux_2_28_x86_64", ("numpy", "torch==2.5.1"), ">=3.9"),
        *SHARED,
        *(Release(name, version, NVIDIA) for name, version in CUDA_121.items()),
    ],
    "cu118": [
        _torch("cu118", CUDA_118),
        *SHARED,
        *(Release(name, version, NVIDIA) for name, version in CUDA_118.items()),
    ],
}
PYTORCH_PROJECTS = {"torch", "torchvision", "torchaudio", "triton", "xformers"}


def wheel(release: Release, marker: str = "") -> bytes:
    """A stub wheel of `release`; `marker` changes its bytes (an index that re-uploaded a file)."""
    module = release.name.replace("-", "_")
    dist_info = f"{module}-{release.version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1", f"Name: {release.name}", f"Version: {release.version}",
        "Summary: a stub of this release for lockstep's tests: real metadata, no code",
        *([f"Requires-Python: {release.requires_python}"] if release.requires_python else []),
        *(f"Requires-Dist: {requirement}" for requirement in release.requires),
    ]
    files = {
        f"{module}/__init__.py": f'"""Stub of {release.name} {release.version} from a copy of PyTorch\'s index."""\n{marker}'.encode(),
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: tests.pytorch_index\nRoot-Is-Purelib: "
                               f"{'true' if release.tag == PURE else 'false'}\nTag: {release.tag.split('.')[0]}\n").encode(),
    }
    record = [f"{path},sha256={_urlsafe_digest(data)},{len(data)}" for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2024, 10, 29, 0, 0, 0)), data)
    return buffer.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write(root: Path, variants: dict[str, list[Release]] = VARIANTS, marker: str = "") -> dict[str, str]:
    """Lay the index out under `root/whl/<variant>/`; return every wheel's sha256 by file name."""
    digests: dict[str, str] = {}
    for variant, releases in variants.items():
        base = root / "whl" / variant
        base.mkdir(parents=True, exist_ok=True)
        by_project: dict[str, list[Release]] = {}
        for release in releases:
            data = wheel(release, marker)
            (base / release.filename).write_bytes(data)
            digests[release.filename] = hashlib.sha256(data).hexdigest()
            by_project.setdefault(normalize(release.name), []).append(release)
        for project, files in by_project.items():
            links = "".join(_anchor(variant, release, digests[release.filename]) for release in files)
            (base / project).mkdir(exist_ok=True)
            (base / project / "index.html").write_text(_page(f"Links for {project}", links))
        listing = "".join(f'<a href="/whl/{variant}/{project}/">{project}</a><br/>\n' for project in sorted(by_project))
        (base / "index.html").write_text(_page("Simple index", listing))
    return digests


def add_real_wheel(root: Path, variant: str, wheel_file: Path) -> str:
    """Serve a real wheel of PyTorch's (e.g. torch-2.13.0+cpu from a local wheel folder) as the only
    file of its project page under `root/whl/<variant>/`; return its sha256."""
    base = root / "whl" / variant
    project = normalize(wheel_file.name.split("-")[0])
    (base / project).mkdir(parents=True, exist_ok=True)
    (base / wheel_file.name).symlink_to(wheel_file.resolve())
    sha256 = hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    href = f"/whl/{variant}/{urllib.parse.quote(wheel_file.name)}#sha256={sha256}"
    (base / project / "index.html").write_text(_page(f"Links for {project}", f'<a href="{href}">{wheel_file.name}</a><br/>\n'))
    return sha256


def _anchor(variant: str, release: Release, sha256: str) -> str:
    href = f"/whl/{variant}/{urllib.parse.quote(release.filename)}#sha256={sha256}"
    python = f' data-requires-python="{html.escape(release.requires_python)}"' if release.requires_python else ""
    return f'<a href="{href}"{python}>{release.filename}</a><br/>\n'


def _page(title: str, body: str) -> str:
    return f"<!DOCTYPE html>\n<html>\n  <body>\n    <h1>{title}</h1>\n{body}  </body>\n</html>\n"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT/whl
    requests: list[str]


@contextmanager
def serve(root: Path) -> Iterator[Served]:
    """Serve `root` on 127.0.0.1 (a free port) until the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}/whl", server.requests)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


if __name__ == "__main__":
    directory = Path(sys.argv[1])
    write(directory)
    with serve(directory) as served:
        print(f"serving a copy of PyTorch's index at {served.url}/cu121 and {served.url}/cu118 (Ctrl-C stops)")
        threading.Event().wait()
