"""deploy/docker/: one multi-stage Dockerfile per service, checked without a Docker engine.

The images are checked against the code they package: the member names in uv.lock, the entry modules
in the installed workspace, the default ports of each service's settings and of ``pfactory up``, and
the repository files the builds copy (present, and not dropped by .dockerignore). Each check is also
shown to fail on a broken Dockerfile, so a passing run means something.
"""

from __future__ import annotations

import dataclasses
import http.server
import importlib.util
import re
import socket
import threading
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from pfactory.alerter.settings import AlerterSettings
from pfactory.cli.stack import SERVICES as STACK_SERVICES
from pfactory.gateway.settings import GatewaySettings
from pfactory.materialiser.settings import MaterialiserSettings
from pfactory.registrar.settings import RegistrarSettings
from pfactory.scheduler.settings import SchedulerSettings
from pfactory.scorer.settings import OnlineSettings, ScorerSettings
from pfactory.trainer.settings import TrainerSettings
from tests.deploy.dockerfiles import (
    DOCKER_DIR,
    REPO,
    DockerfileSyntaxError,
    DockerIgnore,
    Service,
    check_dockerfile,
    load_dockerignore,
    parse_dockerfile,
    workspace_members,
)


def default(settings: type, name: str) -> int:
    """The declared default of a settings field (what the service listens on when nothing is set)."""
    value = settings.model_fields[name].default  # type: ignore[attr-defined]
    assert isinstance(value, int), f"{settings.__name__}.{name} has no integer default"
    return value


SERVICES = {
    service.name: service
    for service in (
        Service(
            "gateway", "pfactory-gateway", "pfactory.gateway", frozenset({default(GatewaySettings, "port")})
        ),
        Service(
            "materialiser",
            "pfactory-materialiser",
            "pfactory.materialiser",
            frozenset({default(MaterialiserSettings, "health_port")}),
            runtime_packages=("openjdk-17-jre-headless",),
        ),
        Service(
            "trainer",
            "pfactory-trainer",
            "pfactory.trainer",
            frozenset({default(TrainerSettings, "health_port")}),
        ),
        Service(
            "registrar",
            "pfactory-registrar",
            "pfactory.registrar",
            frozenset({default(RegistrarSettings, "health_port")}),
        ),
        Service(
            "scheduler",
            "pfactory-scheduler",
            "pfactory.scheduler",
            frozenset({default(SchedulerSettings, "health_port")}),
        ),
        # one image, two processes: the batch worker and `python -m pfactory.scorer online`
        Service(
            "scorer",
            "pfactory-scorer",
            "pfactory.scorer",
            frozenset({default(ScorerSettings, "health_port"), default(OnlineSettings, "port")}),
        ),
        Service(
            "alerter",
            "pfactory-alerter",
            "pfactory.alerter",
            frozenset({default(AlerterSettings, "health_port")}),
        ),
    )
}
GATEWAY = SERVICES["gateway"]


def stack_ports(service: Service) -> dict[str, int]:
    """Port variable to default port of every process ``pfactory up`` runs from this service's module."""
    return {spec.port_env: spec.default_port for spec in STACK_SERVICES if spec.module == service.module}


def gateway_text() -> str:
    return GATEWAY.dockerfile.read_text(encoding="utf-8")


def mutated(old: str, new: str, text: str | None = None) -> str:
    """The gateway Dockerfile with ``old`` replaced; fails if ``old`` is absent, so no mutation is a no-op."""
    source = gateway_text() if text is None else text
    assert old in source, f"{old!r} not in the Dockerfile any more; update the negative test"
    return source.replace(old, new)


def problems_of(text: str, service: Service = GATEWAY, **kwargs: object) -> str:
    return "\n".join(check_dockerfile(text, service, stack_ports=stack_ports(service), **kwargs))  # type: ignore[arg-type]


# --- the real Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_dockerfile_passes_every_check(name: str) -> None:
    service = SERVICES[name]
    assert service.dockerfile.exists(), f"missing {service.dockerfile.relative_to(REPO)}"
    text = service.dockerfile.read_text(encoding="utf-8")
    assert check_dockerfile(text, service, stack_ports=stack_ports(service)) == []


def test_every_dockerfile_is_a_known_service_and_every_deployable_member_has_one() -> None:
    files = {path.name.removesuffix(".Dockerfile") for path in DOCKER_DIR.glob("*.Dockerfile")}
    assert files == set(SERVICES)
    deployables = {
        name
        for name, folder in workspace_members().items()
        if folder.startswith("workers/") or folder == "gateway"
    }
    assert deployables == {service.package for service in SERVICES.values()}


def test_ports_agree_between_settings_and_the_local_stack() -> None:
    for service in SERVICES.values():
        assert set(stack_ports(service).values()) == set(service.ports), service.name


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignore = load_dockerignore()
    for path in (
        ".venv/bin/python",
        ".pfactory/credentials.json",
        "mlruns/0/meta.yaml",
        "tests/conftest.py",
        ".git/HEAD",
        "workers/trainer/src/pfactory/trainer/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        "libs/bus/.env",
    ):
        assert ignore.excluded(path), path
    for path in (
        "pyproject.toml",
        "uv.lock",
        "libs/bus/src/pfactory/bus/app.py",
        "deploy/docker/healthcheck.py",
    ):
        assert not ignore.excluded(path), path


def test_readme_names_each_build_command() -> None:
    readme = (DOCKER_DIR / "README.md").read_text(encoding="utf-8")
    for name in SERVICES:
        assert f"-f deploy/docker/{name}.Dockerfile" in readme, name


# --- the checker catches broken Dockerfiles ----------------------------------------------------------

RUNTIME_FROM = "FROM python:3.11.14-slim-bookworm AS runtime"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (RUNTIME_FROM, "FROM python:latest AS runtime", "never 'latest'"),
        (RUNTIME_FROM, "FROM python AS runtime", "has no tag"),
        (RUNTIME_FROM, "FROM python:slim AS runtime", "not pinned"),
        (RUNTIME_FROM, "ARG PY=3.11\nFROM python:$PY AS runtime", "uses a build argument"),
        (
            "FROM ghcr.io/astral-sh/uv:0.13.9 AS uv",
            "FROM ghcr.io/astral-sh/uv:latest AS uv",
            "never 'latest'",
        ),
        ("USER 10001:10001", "USER root", "must be numeric"),
        ("USER 10001:10001", "USER 0:0", "is root"),
        ("USER 10001:10001\n", "", "no USER, so it runs as root"),
        ("EXPOSE 8080", "EXPOSE 8000", "EXPOSE [8000] but the service listens on [8080]"),
        ('CMD ["python", "/opt', 'CMD ["curl", "/opt', "must run python"),
        ("PF_GATEWAY_PORT=8080", "PF_GATEWAY_PORT=8081", "the HEALTHCHECK checks {'PF_GATEWAY_PORT': 8081}"),
        ('"pfactory.gateway"]', '"pfactory.registrar"]', "runs 'pfactory.registrar', not 'pfactory.gateway'"),
        (
            'ENTRYPOINT ["python", "-m", "pfactory.gateway"]',
            "ENTRYPOINT python -m pfactory.gateway",
            "exec form",
        ),
        ("--no-dev --no-editable", "--no-editable", "add --no-dev"),
        ("uv sync --frozen --no-dev --no-editable", "uv sync --no-dev --no-editable", "add --frozen"),
        (
            "--no-editable --package pfactory-gateway",
            "--no-editable --package pfactory-scorer",
            "use --package",
        ),
        ("COPY gateway/ gateway/", "COPY gatway/ gateway/", "does not exist"),
        ("COPY libs/registry/ libs/registry/\n", "", "nothing copies libs/registry/pyproject.toml"),
        ("COPY pyproject.toml uv.lock ./", "COPY pyproject.toml ./", "nothing copies uv.lock"),
        (
            "COPY --from=builder /app/.venv /app/.venv",
            "COPY --from=builder /app/.venv /venv",
            "(the same path)",
        ),
        ("ENV PATH=/app/.venv/bin:$PATH", "ENV PATH=/usr/bin:$PATH", "ENV PATH=/app/.venv/bin:$PATH"),
        ("WORKDIR /data\n", "WORKDIR /data\nADD https://example.com/tool.tar.gz /opt/\n", "ADD of remote"),
        ("HOME=/data", "HOME=/data \\\n    PF_GATEWAY_BOOTSTRAP_ADMIN_KEY=x", "looks like a secret"),
        ("HOME=/data", "HOME=/data \\\n    AWS_SECRET_ACCESS_KEY=abc", "looks like a secret"),
        ("HOME=/data", "HOME=/data \\\n    PF_X=AKIAABCDEFGHIJKLMNOP", "looks like a secret"),
        ("WORKDIR /data\n", "WORKDIR /data\nARG GITHUB_TOKEN\n", "ARG GITHUB_TOKEN looks like a secret"),
        ("COPY deploy/docker/healthcheck.py /opt", "COPY deploy/docker/healthcheck.py /srv", "is not COPYed"),
    ],
)
def test_checker_catches(old: str, new: str, expected: str) -> None:
    assert expected in problems_of(mutated(old, new))


def test_checker_catches_a_missing_healthcheck() -> None:
    text = re.sub(r"HEALTHCHECK .*?\n    CMD .*?\n", "", gateway_text(), flags=re.S)
    assert "HEALTHCHECK" not in text
    assert "no HEALTHCHECK" in problems_of(text)
    assert "no HEALTHCHECK" in problems_of(text + "HEALTHCHECK NONE\n")


def test_checker_catches_a_single_stage_build() -> None:
    text = (
        "FROM python:3.11.14-slim-bookworm\nUSER 10001\nEXPOSE 8080\n"
        + 'ENTRYPOINT ["python", "-m", "pfactory.gateway"]\n'
    )
    found = problems_of(text)
    assert "single stage" in found
    assert "no RUN 'uv sync --frozen --no-dev --package pfactory-gateway'" in found


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("pfactory.gateway.nope", "cannot be imported"),
        ("pfactory.gateway.routes", "package without __main__.py"),
        ("pfactory.gateway.settings", 'no `if __name__ == "__main__"` block'),
        ("pfactory.registrar", "not in the member"),
    ],
)
def test_checker_catches_an_entrypoint_module_that_cannot_run(module: str, expected: str) -> None:
    service = dataclasses.replace(GATEWAY, module=module)
    text = mutated('"pfactory.gateway"]', f'"{module}"]')
    assert expected in problems_of(text, service)


def test_checker_accepts_a_module_with_a_main_block() -> None:
    # the scorer image also runs `python -m pfactory.scorer.once`; the checker's module rule accepts it
    service = dataclasses.replace(SERVICES["scorer"], module="pfactory.scorer.once")
    text = (
        SERVICES["scorer"]
        .dockerfile.read_text(encoding="utf-8")
        .replace('"pfactory.scorer"]', '"pfactory.scorer.once"]')
    )
    assert check_dockerfile(text, service, stack_ports=stack_ports(SERVICES["scorer"])) == []


def test_checker_catches_copies_the_dockerignore_drops() -> None:
    found = problems_of(gateway_text(), ignore=DockerIgnore.parse("gateway"))
    assert "COPY 'gateway/': gateway is excluded by .dockerignore, so the build cannot see it" in found
    found = problems_of(gateway_text(), ignore=DockerIgnore.parse("gateway/src"))
    assert (
        "gateway/src/pfactory/gateway/app.py is excluded by .dockerignore but the copied folder needs it"
        in found
    )
    found = problems_of(gateway_text(), ignore=DockerIgnore.parse("**/*.py"))
    assert (
        "gateway/src/pfactory/gateway/app.py is excluded by .dockerignore but the copied folder needs it"
        in found
    )
    assert "deploy/docker/healthcheck.py is excluded" in found
    # an exception re-includes what a broader pattern dropped
    assert problems_of(gateway_text(), ignore=DockerIgnore.parse("**/*.py\n!**/*.py")) == ""


def test_checker_requires_the_materialiser_java_runtime() -> None:
    service = SERVICES["materialiser"]
    text = service.dockerfile.read_text(encoding="utf-8")
    assert problems_of(text, service) == ""
    broken = text.replace("openjdk-17-jre-headless", "procps")
    assert broken != text
    assert "apt-get install openjdk-17-jre-headless" in problems_of(broken, service)


# --- the parser ----------------------------------------------------------------------------------------


def test_parser_joins_continuations_and_skips_comments_inside_them() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM a:1 AS one\nRUN echo a \\\n# a comment\n    && echo b\n"
        "FROM b:2\nCOPY --from=one --chown=1:1 /x /y\n"
    )
    assert parsed.directives == {"syntax": "docker/dockerfile:1"}
    assert [item.keyword for item in parsed.global_args] == ["ARG"]
    assert [(stage.image, stage.name) for stage in parsed.stages] == [("a:1", "one"), ("b:2", None)]
    run = parsed.stages[0].instructions[0]
    assert (run.keyword, run.line, run.rest) == ("RUN", 4, "echo a && echo b")
    copy = parsed.final.instructions[0]
    assert copy.flags == {"from": "one", "chown": "1:1"}
    assert copy.words() == ["/x", "/y"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no FROM"),
        ("RUN echo\nFROM a:1\n", "RUN before the first FROM"),
        ("FROM a:1\nFETCH x\n", "unknown instruction 'FETCH'"),
        ("FROM a:1\nRUN echo \\\n", "nothing follows"),
        ("FROM a:1\nRUN echo \\\n\n  b\n", "empty line inside the instruction"),
        ("FROM a:1 AS\n", "FROM takes"),
        ("FROM a:1\nUSER\n", "USER needs arguments"),
        ("FROM a:1\nRUN <<EOF\necho\nEOF\n", "heredocs are not supported"),
        ("# escape=`\nFROM a:1\n", "escape"),
    ],
)
def test_parser_rejects(text: str, expected: str) -> None:
    with pytest.raises(DockerfileSyntaxError, match=re.escape(expected)):
        parse_dockerfile(text)


def test_a_malformed_exec_form_is_reported_not_guessed() -> None:
    text = mutated(
        'ENTRYPOINT ["python", "-m", "pfactory.gateway"]', "ENTRYPOINT ['python', '-m', 'pfactory.gateway']"
    )
    assert "not valid JSON" in problems_of(text)


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("**/__pycache__", "a/b/__pycache__/c.pyc", True),
        ("**/__pycache__", "__pycache__/c.pyc", True),
        ("*.pyc", "a/b.pyc", False),  # '*' does not cross '/'
        ("*/*.pyc", "a/b.pyc", True),
        ("/data", "data/x.csv", True),
        ("data", "libs/x/data/y", False),  # root-relative unless written with **/
        ("tests\n!tests/keep.py", "tests/keep.py", False),
        ("tests\n!tests/keep.py", "tests/other.py", True),
        ("!x\nx", "x", True),  # the last match wins
        ("b?ild", "build/x", True),
        ("# comment\n\n", "anything", False),
    ],
)
def test_dockerignore_follows_docker_rules(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore.parse(patterns).excluded(path) is excluded


# --- the HEALTHCHECK script -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pf_healthcheck", DOCKER_DIR / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server() -> Iterator[Callable[[int], int]]:
    """Start a 127.0.0.1 server whose /health answers the given status; yields a starter returning its port."""
    servers: list[http.server.HTTPServer] = []

    def start(status: int) -> int:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status if self.path == "/health" else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_healthcheck_passes_when_any_port_is_healthy(
    healthcheck: ModuleType, health_server: Callable[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy, sick = health_server(200), health_server(503)
    assert healthcheck.main([f"PF_A={healthy}"]) == 0
    assert healthcheck.main([f"PF_A={sick}", f"PF_B={healthy}"]) == 0  # the scorer: worker or online API
    monkeypatch.setenv("PF_A", str(healthy))
    assert healthcheck.main([f"PF_A={sick}"]) == 0  # the environment's port wins, as for the service


def test_healthcheck_fails_and_says_why(
    healthcheck: ModuleType, health_server: Callable[[int], int], capsys: pytest.CaptureFixture[str]
) -> None:
    sick = health_server(503)
    assert healthcheck.main([f"PF_A={sick}", f"PF_B={closed_port()}"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{sick}/health answered 503" in err
    assert "unreachable" in err
    assert healthcheck.main([]) == 2
    assert healthcheck.main(["PF_A=http"]) == 2
    assert "is not an integer" in capsys.readouterr().err


def closed_port() -> int:
    """A port that was bound and released, so nothing listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
