"""Wheelhouses: every wheel a device needs, downloaded on a connected machine, installed offline.

``edge-deploy wheelhouse --device rpi5 --out DIR`` runs ``pip download --only-binary=:all:`` for the
device's platform (its architecture, glibc and CPython version, from the profile or ``--python``),
not this machine's, so DIR holds the device's own wheels (aarch64 onnxruntime, LiteRT, numpy...)
plus a pip wheel. ``edge-deploy --bootstrap --wheelhouse DIR`` then copies DIR to the device in one
tar stream, makes the venv without ensurepip, and installs with that pip wheel from the copied
folder only (``--no-index --find-links``): the device needs no network (air-gapped fleets, slow
links), and an emulated board skips the slowest Python work it would do (ensurepip, downloads).

:class:`Wheelhouse` reads a folder's wheel file names (PEP 427: ``NAME-VER-PY-ABI-PLATFORM.whl``)
and says whether every wheel installs on a device of a given Python, architecture and glibc,
before bootstrap changes anything on the device.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgewise.devices import DeviceProfile
from edgewise.edge.deploy import DeployError
from edgewise.errors import MissingDependencyError

DEFAULT_GLIBC = (2, 28)  # a profile without ``glibc``: manylinux_2_28 and older wheels
MIN_MANYLINUX = 17  # manylinux2014 = manylinux_2_17: the oldest tag worth asking for
_OLD_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_PY_RE = re.compile(r"^3\.(\d+)$")
_NO_NETWORK = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "Read timed out",
    "ConnectTimeoutError",
)


def normalize(name: str) -> str:
    """A project name as wheel file names spell it (PEP 503 + PEP 427): ``ai-edge.litert`` -> ``ai_edge_litert``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_python(version: str, what: str = "--python") -> tuple[int, int]:
    """``"3.11"`` or ``"3.11.2"`` -> (3, 11)."""
    parts = version.strip().split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise DeployError(f"{what} {version!r}: expected a CPython version like 3.11") from None
    if major != 3:
        raise DeployError(f"{what} {version!r}: expected a CPython 3 version like 3.11")
    return major, minor


def _parse_glibc(version: str | None) -> tuple[int, int] | None:
    """``"glibc 2.36"`` (getconf GNU_LIBC_VERSION) or ``"2.36"`` -> (2, 36); None when unknown."""
    m = re.search(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Wheel:
    filename: str
    name: str  # normalized
    version: str
    tags: frozenset[tuple[str, str, str]]  # (python, abi, platform), compressed tag sets expanded

    @classmethod
    def parse(cls, filename: str) -> Wheel:
        parts = filename[: -len(".whl")].split("-")
        if not filename.endswith(".whl") or len(parts) not in (5, 6):
            raise DeployError(f"{filename}: not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
        py, abi, plat = parts[-3:]
        tags = frozenset((p, a, t) for p in py.split(".") for a in abi.split(".") for t in plat.split("."))
        return cls(filename, normalize(parts[0]), parts[1], tags)

    def installs_on(self, python: tuple[int, int], arch: str, glibc: tuple[int, int] | None) -> bool:
        """Whether pip on CPython ``python`` on a glibc ``arch`` Linux takes this wheel."""
        return any(_python_ok(p, a, python) and _platform_ok(t, arch, glibc) for p, a, t in self.tags)

    @property
    def pythons(self) -> set[str]:
        """The CPython versions this wheel is built for ("3.11"), empty for pure or abi3 wheels."""
        return {
            f"3.{p[3:]}"
            for p, a, _ in self.tags
            if p.startswith("cp3") and a not in ("abi3", "none") and p[3:].isdigit()
        }

    @property
    def arches(self) -> set[str]:
        return {arch for _, _, t in self.tags if (arch := _platform_arch(t))}


def _python_ok(py: str, abi: str, version: tuple[int, int]) -> bool:
    m = re.fullmatch(r"(py|cp)(\d)(\d*)", py)
    if not m or int(m.group(2)) != version[0]:
        return False
    minor = int(m.group(3)) if m.group(3) else None
    if m.group(1) == "py":
        return abi == "none" and (minor is None or minor <= version[1])
    if abi == "abi3":
        return minor is None or minor <= version[1]
    return minor == version[1] and abi in ("none", f"cp{version[0]}{version[1]}")


def _platform_arch(tag: str) -> str | None:
    m = re.fullmatch(r"(?:linux|manylinux1|manylinux2010|manylinux2014|manylinux_\d+_\d+)_(.+)", tag)
    return m.group(1) if m else None


def _platform_ok(tag: str, arch: str, glibc: tuple[int, int] | None) -> bool:
    if tag == "any":
        return True
    if _platform_arch(tag) != arch:
        return False
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_.+", tag)
    needs = (int(m.group(1)), int(m.group(2))) if m else _OLD_MANYLINUX.get(tag.split("_", 1)[0])
    return glibc is None or needs is None or needs <= glibc


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels (``*.whl`` at its top level) that must hold a pip wheel."""

    folder: Path
    wheels: tuple[Wheel, ...]

    @classmethod
    def open(cls, folder: Path | str) -> Wheelhouse:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DeployError(f"--wheelhouse {folder}: no such folder (edge-deploy wheelhouse makes one)")
        wheels = tuple(Wheel.parse(p.name) for p in sorted(folder.glob("*.whl")) if p.is_file())
        if not wheels:
            raise DeployError(
                f"--wheelhouse {folder}: no .whl files in it (edge-deploy wheelhouse makes one)"
            )
        house = cls(folder.resolve(), wheels)
        if house.find("pip") is None:
            raise DeployError(
                f"--wheelhouse {folder}: no pip wheel in it, and the device installs with it "
                "(edge-deploy wheelhouse adds one; or pip download pip -d DIR)"
            )
        return house

    def find(self, name: str) -> Wheel | None:
        """The newest wheel of project ``name`` (by file name order within a version string)."""
        found = [w for w in self.wheels if w.name == normalize(name)]
        return max(found, key=lambda w: _version_key(w.version)) if found else None

    @property
    def pip(self) -> Wheel:
        wheel = self.find("pip")
        assert wheel is not None  # open() checked it
        return wheel

    @property
    def files(self) -> list[str]:
        return [w.filename for w in self.wheels]

    @property
    def size(self) -> int:
        return sum((self.folder / w.filename).stat().st_size for w in self.wheels)

    def describe(self) -> str:
        """``25 wheels, 59 MB, for CPython 3.11 on aarch64``."""
        pythons = sorted({v for w in self.wheels for v in w.pythons}, key=parse_python)
        arches = sorted({a for w in self.wheels for a in w.arches})
        target = f"CPython {'/'.join(pythons)}" if pythons else "any Python 3"
        target += f" on {'/'.join(arches)}" if arches else " (pure Python only)"
        return f"{len(self.wheels)} wheels, {self.size / 1e6:.0f} MB, for {target}"

    def misfits(self, python: str, arch: str, glibc: str | None = None) -> list[str]:
        """The wheels that would not install on CPython ``python`` (3.11.2) on ``arch`` with ``glibc``."""
        version = parse_python(python, "the device's Python")
        libc = _parse_glibc(glibc)
        return [w.filename for w in self.wheels if not w.installs_on(version, arch, libc)]


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+!-]", version))


# --------------------------------------------------------------------------------------------------
# making one


def profile_python(profile: DeviceProfile, given: str | None) -> str:
    """The device's CPython ``X.Y``: ``--python``, else the profile's ``python_version``."""
    if given is None:
        if profile.python_version is None:
            note = f" ({profile.notes})" if profile.notes else ""
            raise DeployError(
                f"profile {profile.name} names no python_version{note}: pass --python X.Y, the version "
                "of the Python edgewise runs with on the device (edgewise needs >= 3.10)"
            )
        given = profile.python_version
    major, minor = parse_python(given)
    if (major, minor) < (3, 10):
        raise DeployError(f"--python {given}: edgewise needs Python >= 3.10 on the device")
    return f"{major}.{minor}"


def platform_tags(profile: DeviceProfile) -> list[str]:
    """pip ``--platform`` values for the device: manylinux tags up to its glibc (pip does not widen
    ``manylinux_2_X`` to older ones by itself), newest first."""
    arch = profile.arch
    glibc = _parse_glibc(profile.glibc) or DEFAULT_GLIBC
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc[1], MIN_MANYLINUX - 1, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def download_argv(
    profile: DeviceProfile,
    python: str,
    out: Path,
    requirements: Sequence[str],
    *,
    wheel_index: str | None = None,
    find_links: Sequence[Path] = (),
    no_index: bool = False,
) -> list[str]:
    major, minor = parse_python(python)
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
    for tag in platform_tags(profile):
        argv += ["--platform", tag]
    argv += ["--python-version", f"{major}.{minor}", "--implementation", "cp", "--abi", f"cp{major}{minor}"]
    argv += ["-d", str(out)]
    if no_index:
        argv.append("--no-index")
    for link in find_links:
        argv += ["--find-links", str(link)]
    if wheel_index:
        argv += ["--extra-index-url", wheel_index]
    return [*argv, *requirements]


def make_command(profile: str, python: str, out: str = "DIR", spec: str | None = None) -> str:
    """The ``edge-deploy wheelhouse`` line that makes a wheelhouse for this device."""
    extra = f" --edgewise-spec {spec}" if spec and spec != "edgewise[edge]" else ""
    return f"edge-deploy wheelhouse --device {profile} --python {python} --out {out}{extra}"


def split_spec(spec: str) -> tuple[str, str]:
    """``path/to.whl[edge]`` -> (``path/to.whl``, ``[edge]``)."""
    if spec.endswith("]") and "[" in spec:
        i = spec.rindex("[")
        return spec[:i], spec[i:]
    return spec, ""


def build(
    profile: DeviceProfile,
    out: Path,
    python: str,
    spec: str = "edgewise[edge]",
    *,
    wheel_index: str | None = None,
    find_links: Sequence[Path] = (),
    no_index: bool = False,
    say: Callable[[str], None] = print,
) -> Wheelhouse:
    """Fill ``out`` with the wheels for ``spec`` and pip, for the device; returns the wheelhouse.

    pip downloads into a fresh folder beside ``out`` first: ``out``'s wheels are replaced only when
    pip succeeds, and wheels of an older set never linger (pip would pick the newest it sees).
    """
    python = profile_python(profile, python)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out}: exists and is not a folder")
    spec_path, extras = split_spec(spec)
    local = Path(spec_path).expanduser()
    is_path = spec_path.endswith(".whl") or "/" in spec_path  # as pip reads it: else a project name
    if is_path:
        if not local.is_file() or local.suffix != ".whl":
            what = "not a .whl file" if local.exists() else "no such file"
            raise DeployError(f"--edgewise-spec {spec_path}: {what} (a wheel path or a requirement)")
        Wheel.parse(local.name)  # a wheel file name pip accepts
        spec = f"{local.resolve()}{extras}"
    requirements = [spec, "pip"]
    if wheel_index:
        requirements.append("onnxruntime-gpu")
    if shutil.which("tar") is None:  # bootstrap streams the folder with tar
        raise MissingDependencyError("tar not found: edge-deploy copies a wheelhouse with tar")
    out.parent.mkdir(parents=True, exist_ok=True)
    say(
        f"downloading {' '.join(requirements)} for {profile.name} "
        f"(CPython {python}, {profile.arch}, {platform_tags(profile)[0]} and older)"
    )
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        argv = download_argv(
            profile, python, Path(tmp), requirements,
            wheel_index=wheel_index, find_links=find_links, no_index=no_index,
        )  # fmt: skip
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise MissingDependencyError(
                f"cannot run pip ({exc.strerror}): {sys.executable} -m pip"
            ) from None
        if proc.returncode != 0:
            raise DeployError(_pip_failure(proc.stdout + proc.stderr, profile, python))
        if is_path and not (Path(tmp) / local.name).exists():
            shutil.copy2(local, Path(tmp) / local.name)  # the wheel itself goes to the device too
        out.mkdir(exist_ok=True)
        for old in out.glob("*.whl"):
            old.unlink()
        for new in Path(tmp).glob("*.whl"):
            shutil.move(str(new), out / new.name)
    house = Wheelhouse.open(out)
    say(f"downloaded in {time.monotonic() - t0:.1f} s")
    return house


def _pip_failure(output: str, profile: DeviceProfile, python: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = lines[-1] if lines else "pip gave no reason"
    if any(marker in output for marker in _NO_NETWORK):
        return (
            f"pip download could not reach the package index (no network?): {last}; make the wheelhouse "
            "on a machine with internet access and copy the folder here"
        )
    if "No matching distribution" in output or "Could not find a version" in output:
        last += (
            f" (no wheel of it for CPython {python} on {profile.arch}: the device would have to build it; "
            "check --python and --edgewise-spec)"
        )
    return f"pip download for {profile.name} failed: {last}"
