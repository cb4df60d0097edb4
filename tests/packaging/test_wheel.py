"""The wheel and the container image as users get them (issue 6, point 2).

There is no Docker engine on the development and CI machines, so the image itself is not built
here. What can be tested is: the wheel builds from exactly the files the Dockerfile's builder stage
copies, installs into a fresh virtual environment (no system site packages) with its dependencies,
and the installed `esm` runs; the daemon started from that install writes nothing outside its state
file (the image's read-only root filesystem); and the Dockerfile itself, read statically.

Dependencies come from the package index the project's own `make setup` uses: pip in the fresh
environment reads the same pip configuration (pip.conf files and PIP_* variables), so a machine
that can run `make setup` can run these tests. pip's cache, warmed by `make setup`, keeps the
install fast.
"""

from __future__ import annotations

import contextlib
import email.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

PIP_SECONDS = 150  # pip wheel / pip install, network included; a clear failure before pytest's timeout
# The first test to use the fresh environment pays for building and installing (about 20 s with a
# warm pip cache); allow for a cold cache on a slow network.
INSTALL_TIMEOUT = 2 * PIP_SECONDS + 60


# --------------------------------------------------------------------------------------------
# the Dockerfile, read statically


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and its arguments with continuations joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """The Dockerfile's stages (each from its FROM on), comments dropped, continuation lines joined."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    assert not pending, "the Dockerfile ends in a continuation line"
    return stages


def named(stage: list[Instruction], keyword: str) -> list[Instruction]:
    """The stage's instructions with this keyword, in order."""
    return [i for i in stage if i.keyword == keyword]


def copy_sources(instruction: Instruction) -> list[str]:
    """The sources of a COPY (flags and the destination left out)."""
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    return words[:-1]


def stage_named(stages: list[list[Instruction]], name: str) -> list[Instruction]:
    """The stage declared `FROM ... AS name`."""
    for stage in stages:
        words = stage[0].args.split()
        if len(words) == 3 and words[1].upper() == "AS" and words[2] == name:
            return stage
    raise AssertionError(f"no stage named {name!r} in the Dockerfile")


def builder_sources() -> list[str]:
    """What the builder stage copies from the build context, the only files the wheel is built from."""
    stage = stage_named(parse_dockerfile(DOCKERFILE.read_text()), "builder")
    return [s for i in named(stage, "COPY") if "--from" not in i.args for s in copy_sources(i)]


def dockerignore_excludes(path: str) -> bool:
    """Whether `.dockerignore` keeps `path` out of the build context (the last matching pattern wins,
    and a pattern that matches a parent folder matches what is inside it, as Docker reads the file)."""
    excluded = False
    parts = path.split("/")
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def final_stage() -> list[Instruction]:
    """The Dockerfile's final (runtime) stage."""
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


class TestDockerfile:
    """The Dockerfile builds a slim, non-root image of the installed wheel with `esm` as its entrypoint."""

    def test_is_multi_stage_on_a_slim_python_311_base_by_tag(self) -> None:
        """Every stage starts from a python:3.11-slim tag, pinned by tag rather than digest."""
        stages = parse_dockerfile(DOCKERFILE.read_text())
        assert len(stages) >= 2
        for stage in stages:
            image = stage[0].args.split()[0]
            assert image.startswith("python:3.11-slim"), image
            assert "@" not in image, image

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        """The last USER is a numeric, non-zero UID (and GID), set after every RUN of the final stage."""
        final = final_stage()
        users = named(final, "USER")
        assert users, "the final stage sets no USER"
        match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].args)
        assert match, f"USER {users[-1].args} is not numeric (Kubernetes' runAsNonRoot needs a number)"
        assert int(match[1]) != 0
        assert match[2] is None or int(match[2]) != 0
        assert final.index(users[-1]) > max(final.index(i) for i in named(final, "RUN"))

    def test_starts_esm_run_with_the_mounted_configuration(self) -> None:
        """ENTRYPOINT is exactly ["esm"] in exec form, and CMD runs the daemon on /etc/esm/config.yaml."""
        final = final_stage()
        assert [json.loads(i.args) for i in named(final, "ENTRYPOINT")] == [["esm"]]
        assert [json.loads(i.args) for i in named(final, "CMD")] == [["run", "--config", "/etc/esm/config.yaml"]]

    def test_installs_the_wheel_not_the_source_tree(self) -> None:
        """The final stage copies nothing from the build context; pip installs the esm wheel from the
        builder's wheels only, keeping no cache."""
        final = final_stage()
        for i in named(final, "COPY") + named(final, "ADD"):
            assert "--from=builder" in i.args, f"{i.keyword} {i.args} copies from the build context"
        installs = [i.args for i in named(final, "RUN") if "pip install" in i.args]
        assert len(installs) == 1, installs
        assert re.search(r"esm-\S*\.whl", installs[0]), installs[0]
        for flag in ("--no-index", "--no-cache-dir"):
            assert flag in installs[0], installs[0]

    def test_fetches_nothing_by_url(self) -> None:
        """No ADD of a URL or git repository anywhere: every input is the build context or a pinned base."""
        for stage in parse_dockerfile(DOCKERFILE.read_text()):
            for i in named(stage, "ADD"):
                assert not re.search(r"(https?|git)://|git@", i.args), i.args

    def test_health_check_absent_or_on_healthz(self) -> None:
        """A HEALTHCHECK, if any, probes /healthz (Kubernetes uses its own probes on /healthz and /readyz)."""
        final = final_stage()
        for i in named(final, "HEALTHCHECK"):
            assert i.args == "NONE" or "/healthz" in i.args, i.args

    def test_exposes_the_http_port_and_logs_unbuffered(self) -> None:
        """Port 9100 (/metrics, /healthz, /readyz) is exposed and Python output is unbuffered."""
        final = final_stage()
        assert "9100" in [p.split("/")[0] for i in named(final, "EXPOSE") for p in i.args.split()]
        assert any(re.search(r"(^|\s)PYTHONUNBUFFERED=1(\s|$)", i.args) for i in named(final, "ENV"))

    def test_labels_carry_the_package_version(self) -> None:
        """The OCI version label comes from ARG VERSION, whose default is pyproject.toml's version."""
        final = final_stage()
        versions = [i.args.partition("=")[2] for i in named(final, "ARG") if i.args.startswith("VERSION=")]
        assert versions == [PYPROJECT["version"]]
        labels = " ".join(i.args for i in named(final, "LABEL"))
        for key in ("title", "description", "licenses", "version", "revision"):
            assert f"org.opencontainers.image.{key}=" in labels

    def test_build_context_holds_only_the_wheel_sources(self) -> None:
        """`.dockerignore` lets in what the builder copies and keeps environments, caches and tests out."""
        for source in builder_sources():
            assert not dockerignore_excludes(source), f"{source} is copied but .dockerignore excludes it"
        for path in (
            ".git/HEAD",
            ".venv/bin/python",
            ".kinesalite/node_modules/kinesalite/index.js",
            ".mypy_cache/3.11/esm",
            ".ruff_cache/CACHEDIR.TAG",
            ".pytest_cache/README.md",
            ".hypothesis/examples/x",
            "tests/unit/test_cli.py",
            "build/lib/esm/cli.py",
            "dist/esm-0.1.0-py3-none-any.whl",
            "esm.egg-info/PKG-INFO",
            "esm-state.db",
            "esm/__pycache__/cli.cpython-311.pyc",
        ):
            assert dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


# --------------------------------------------------------------------------------------------
# the wheel, built and installed


def _env(**extra: str) -> dict[str, str]:
    """This process's environment (so pip's configuration) without the project's virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _run(args: list[str | Path], *, timeout: float, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, failing with its output if it exits non-zero."""
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The esm wheel, built by `pip wheel --no-deps` from a copy of exactly the builder stage's sources
    (so the working tree gets no build/ or egg-info output, and a missing COPY shows here)."""
    src = tmp_path_factory.mktemp("src")
    for source in builder_sources():
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / source)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, src], timeout=PIP_SECONDS, cwd=src)
    wheels = list(out.glob("esm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment (no system site packages) with the wheel and its dependencies installed."""
    path = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", path], timeout=120, cwd=path)
    _run([path / "bin" / "python", "-m", "pip", "install", wheel], timeout=PIP_SECONDS, cwd=path)
    return path


@contextlib.contextmanager
def _daemon(venv: Path, config: Path, *, cwd: Path, home: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The installed `esm run` on `config`, once it logged `http_listening`; killed on the way out if still running."""
    args = [str(venv / "bin" / "esm"), "run", "--config", str(config), "--log-format", "json"]
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=_env(HOME=str(home)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        try:
            seen = []
            for line in proc.stderr:  # pytest's per-test timeout bounds a daemon that never listens
                seen.append(line)
                if '"http_listening"' in line:
                    break
            else:
                raise AssertionError(f"esm run exited {proc.wait()} before listening:\n{''.join(seen)}")
            yield proc, int(json.loads(seen[-1])["port"])
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.timeout(INSTALL_TIMEOUT)
class TestWheel:
    """The wheel holds the package, its type marker and its metadata, and nothing else."""

    def test_holds_the_package_and_py_typed_and_no_tests(self, wheel: Path) -> None:
        """Only `esm/` and its dist-info are at the top; `esm/py.typed` is there, no tests are."""
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
        assert "esm/py.typed" in names
        assert "esm/cli.py" in names
        assert {n.split("/")[0] for n in names} == {"esm", f"esm-{PYPROJECT['version']}.dist-info"}
        assert not [n for n in names if re.search(r"(^|/)(tests?|conftest\.py)(/|$)", n)]
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    def test_declares_the_console_script_and_the_dependencies(self, wheel: Path) -> None:
        """The `esm` console script is declared, and Requires-Dist lists pyproject.toml's dependencies."""
        with zipfile.ZipFile(wheel) as zf:
            dist_info = f"esm-{PYPROJECT['version']}.dist-info"
            entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
            metadata = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        assert re.search(r"^esm = esm\.cli:main$", entry_points, re.MULTILINE), entry_points
        required = {r.replace(" ", "") for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r}
        assert required == {d.replace(" ", "") for d in PYPROJECT["dependencies"]}


@pytest.mark.timeout(INSTALL_TIMEOUT)
class TestCleanInstall:
    """The wheel installed into a fresh virtual environment runs as `esm`."""

    def test_environment_has_no_system_site_packages_and_imports_the_installed_copy(
        self, venv: Path, tmp_path: Path
    ) -> None:
        """`esm` is imported from the new environment's site-packages, not from the source tree."""
        assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
        code = "import esm, sys; print(esm.__file__); print(sys.prefix != sys.base_prefix)"
        out = _run([venv / "bin" / "python", "-c", code], timeout=60, cwd=tmp_path).stdout.split()
        assert Path(out[0]).is_relative_to(venv / "lib"), out
        assert out[1] == "True"

    def test_help_runs(self, venv: Path, tmp_path: Path) -> None:
        """`esm --help` exits 0 and lists the commands."""
        out = _run([venv / "bin" / "esm", "--help"], timeout=60, cwd=tmp_path).stdout
        for command in ("run", "validate", "schema"):
            assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), out

    def test_validates_the_example_configuration(self, venv: Path, tmp_path: Path) -> None:
        """`esm validate config/example.yaml` exits 0 with the installed package alone (no dev extras)."""
        config = ROOT / "config" / "example.yaml"
        out = _run([venv / "bin" / "esm", "validate", config], timeout=60, cwd=tmp_path).stdout
        assert out.strip() == f"{config}: ok"

    def test_daemon_writes_nothing_outside_its_state_file(self, venv: Path, tmp_path: Path) -> None:
        """`esm run` with no stream mappings serves /healthz, drains on SIGTERM with exit 0, and creates no
        file in its working directory, its configuration folder or its home (a read-only root filesystem)."""
        work, conf, home = (tmp_path / d for d in ("work", "conf", "home"))
        for d in (work, conf, home):
            d.mkdir()
        config = conf / "config.yaml"
        config.write_text("http: {listen: '127.0.0.1:0'}\nfunctions: {}\nevent_source_mappings: []\n")
        before = sorted(tmp_path.rglob("*"))
        with _daemon(venv, config, cwd=work, home=home) as (proc, port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        assert sorted(tmp_path.rglob("*")) == before
