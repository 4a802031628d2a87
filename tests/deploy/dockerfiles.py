"""A strict Dockerfile parser and the checks deploy/docker/*.Dockerfile must pass (no Docker engine needed).

:func:`parse_dockerfile` reads the instructions (parser directives, comments, continuation lines, JSON
and shell forms) into stages and raises :class:`DockerfileSyntaxError` on anything it does not
understand, rather than guessing. :class:`DockerIgnore` applies ``.dockerignore`` with Docker's rules
(``*``, ``?``, ``**``, ``!`` exceptions, last match wins, a matched folder excludes its contents).
:func:`check_dockerfile` returns every problem of one service's Dockerfile, each saying what to fix.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "deploy" / "docker"

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
DIRECTIVES = frozenset({"syntax", "escape", "check"})
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|ACCESS_?KEY|PRIVATE_?KEY|(?:^|_)KEY$", re.I
)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|pf_[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY")
# build leftovers a COPY of a member folder may carry; .dockerignore may drop them, nothing else
JUNK_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


class DockerfileSyntaxError(ValueError):
    """The Dockerfile is malformed, or uses a form this checker refuses to guess about."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), the raw argument text, leading ``--flags`` and its line."""

    keyword: str
    args: str
    line: int
    flags: Mapping[str, str] = field(default_factory=dict)
    rest: str = ""

    def json_form(self) -> list[str] | None:
        """The exec form's list when ``rest`` is a JSON array of strings, None for the shell form."""
        text = self.rest.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise DockerfileSyntaxError(
                f"line {self.line}: {self.keyword} starts like an exec form but is not valid JSON ({error}); "
                'write it as ["python", "-m", ...] with double quotes'
            ) from error
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DockerfileSyntaxError(
                f"line {self.line}: {self.keyword}'s exec form must be a list of strings"
            )
        return value

    def words(self) -> list[str]:
        """``rest`` split like a shell would (quotes honoured), or the exec form's list."""
        exec_form = self.json_form()
        if exec_form is not None:
            return exec_form
        try:
            return shlex.split(self.rest)
        except ValueError as error:
            raise DockerfileSyntaxError(f"line {self.line}: {self.keyword}: {error}") from error


@dataclass
class Stage:
    """A build stage: its ``FROM`` image, optional ``AS`` name, position and instructions."""

    image: str
    name: str | None
    index: int
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions with this keyword, in order."""
        return [item for item in self.instructions if item.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ``ENV`` values (later ones win)."""
        values: dict[str, str] = {}
        for item in self.all("ENV"):
            values.update(env_pairs(item))
        return values


@dataclass
class Dockerfile:
    """A parsed Dockerfile: parser directives, ``ARG`` before the first ``FROM``, and the stages."""

    directives: dict[str, str]
    global_args: list[Instruction]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage ``docker build`` outputs by default."""
        return self.stages[-1]

    def stage(self, ref: str) -> Stage | None:
        """An earlier stage named ``ref`` (or numbered, as ``COPY --from=0`` allows)."""
        for stage in self.stages:
            if stage.name == ref.lower() or (ref.isdigit() and int(ref) == stage.index):
                return stage
        return None


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines; yield (first line number, text)."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # comments are dropped, inside a continuation too (as Docker does)
        if not stripped:
            if buffer:
                raise DockerfileSyntaxError(
                    f"line {number}: empty line inside the instruction started on line {start}; "
                    "remove it or end the previous line without a backslash"
                )
            continue
        if not buffer:
            start = number
        if raw.rstrip().endswith("\\"):
            buffer.append(raw.rstrip()[:-1])
            continue
        buffer.append(raw)
        yield start, " ".join(part.strip() for part in buffer)
        buffer = []
    if buffer:
        raise DockerfileSyntaxError(
            f"line {start}: the instruction ends with a backslash but nothing follows; remove the last '\\'"
        )


def _split_flags(keyword: str, args: str, line: int) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, sep, value = token[2:].partition("=")
        if not name:
            raise DockerfileSyntaxError(f"line {line}: {keyword} has an empty flag '--'")
        flags[name] = value if sep else "true"
    return flags, rest


def parse_dockerfile(text: str) -> Dockerfile:
    """Parse a Dockerfile strictly.

    Raises:
        DockerfileSyntaxError: an unknown instruction, an instruction before ``FROM`` other than
            ``ARG``, a dangling continuation, a heredoc, a non-default escape character, a malformed
            ``FROM``, or no stage at all.
    """
    directives: dict[str, str] = {}
    lines = text.splitlines()
    for raw in lines:
        match = re.fullmatch(r"\s*#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*", raw)
        if not match or match.group(1).lower() not in DIRECTIVES:
            break
        directives[match.group(1).lower()] = match.group(2)
    if directives.get("escape", "\\") != "\\":
        raise DockerfileSyntaxError(
            "the '# escape=' directive is not supported here; use the default backslash"
        )
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for line, logical in _logical_lines(text):
        keyword, _, args = logical.strip().partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword not in INSTRUCTIONS:
            raise DockerfileSyntaxError(f"line {line}: unknown instruction {keyword!r}")
        if not args:
            raise DockerfileSyntaxError(f"line {line}: {keyword} needs arguments")
        if re.search(r"<<-?['\"]?[A-Za-z_]", args) and keyword in {"RUN", "COPY", "ADD"}:
            raise DockerfileSyntaxError(
                f"line {line}: heredocs are not supported by this checker; use a file"
            )
        flags, rest = _split_flags(keyword, args, line)
        instruction = Instruction(keyword, args, line, flags, rest)
        if keyword == "FROM":
            parts = rest.split()
            if len(parts) == 1:
                name = None
            elif len(parts) == 3 and parts[1].upper() == "AS":
                name = parts[2].lower()
            else:
                raise DockerfileSyntaxError(
                    f"line {line}: FROM takes 'IMAGE' or 'IMAGE AS NAME', got {rest!r}"
                )
            stages.append(Stage(parts[0], name, len(stages), line))
        elif not stages:
            if keyword != "ARG":
                raise DockerfileSyntaxError(f"line {line}: {keyword} before the first FROM (only ARG may be)")
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise DockerfileSyntaxError("no FROM: a Dockerfile needs at least one stage")
    return Dockerfile(directives, global_args, stages)


def env_pairs(item: Instruction) -> dict[str, str]:
    """``ENV a=1 b=2`` (or the legacy ``ENV a 1``) as a dict."""
    words = shlex.split(item.rest)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DockerfileSyntaxError(f"line {item.line}: ENV entry {word!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


# ---------------------------------------------------------------------------------------------------
# .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f".dockerignore pattern {pattern!r} has an unclosed '['")
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


@dataclass
class DockerIgnore:
    """``.dockerignore`` rules: ``(negated, regex, pattern)`` in file order."""

    rules: list[tuple[bool, re.Pattern[str], str]]

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        """Read the file's patterns as Docker does (comments, blanks, leading '/', '!' exceptions)."""
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            pattern = re.sub(r"/+", "/", pattern).strip("/")
            pattern = "/".join(part for part in pattern.split("/") if part != ".")
            if not pattern:
                continue
            rules.append((negated, _pattern_regex(pattern), line))
        return cls(rules)

    def excluded(self, path: str) -> bool:
        """Whether the build context leaves ``path`` (relative, '/'-separated) out."""
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negated, regex, _ in self.rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not negated
        return verdict


def load_dockerignore(root: Path = REPO) -> DockerIgnore:
    """The repository's .dockerignore (no file: nothing is excluded)."""
    path = root / ".dockerignore"
    return DockerIgnore.parse(path.read_text(encoding="utf-8") if path.exists() else "")


# ---------------------------------------------------------------------------------------------------
# the services and what their images must be


@dataclass(frozen=True)
class Service:
    """One image: its workspace member, entry module, ports and runtime needs."""

    name: str
    package: str
    module: str
    ports: frozenset[int]
    runtime_packages: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> Path:
        """deploy/docker/<name>.Dockerfile."""
        return DOCKER_DIR / f"{self.name}.Dockerfile"


@functools.cache
def _lock(root: Path) -> dict[str, Any]:
    """uv.lock, parsed once per root (it is large and every check reads it)."""
    return tomllib.loads((root / "uv.lock").read_text(encoding="utf-8"))


def workspace_members(root: Path = REPO) -> dict[str, str]:
    """Package name to folder of every workspace member in uv.lock."""
    lock = _lock(root)
    members: dict[str, str] = {}
    for package in lock["package"]:
        source = package.get("source", {})
        folder = source.get("editable") or source.get("virtual")
        if folder is not None and folder != ".":
            members[package["name"]] = folder
    return members


def workspace_closure(package: str, root: Path = REPO) -> dict[str, str]:
    """The member and every workspace member it depends on, transitively, from uv.lock (name to folder)."""
    lock = _lock(root)
    by_name = {item["name"]: item for item in lock["package"]}
    members = workspace_members(root)
    if package not in members:
        raise KeyError(f"{package!r} is not a workspace member in uv.lock; members: {sorted(members)}")
    seen = {package}
    todo = [package]
    while todo:
        for dependency in by_name[todo.pop()].get("dependencies", []):
            name = dependency["name"]
            if name in members and name not in seen:
                seen.add(name)
                todo.append(name)
    return {name: members[name] for name in sorted(seen)}


def uv_sync_commands(item: Instruction) -> list[list[str]]:
    """Each ``uv sync ...`` command of a RUN, as words (commands split at ``&&``, ``||``, ``;``, ``|``)."""
    found: list[list[str]] = []
    exec_form = item.json_form()
    commands = (
        [exec_form]
        if exec_form is not None
        else [shlex.split(part) for part in re.split(r"&&|\|\||;|\|", item.rest) if part.strip()]
    )
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # leading VAR=value assignments
        if words[:2] == ["uv", "sync"]:
            found.append(words)
    return found


def _option(words: Sequence[str], name: str) -> str | None:
    for index, word in enumerate(words):
        if word == name and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(name + "="):
            return word.partition("=")[2]
    return None


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned to a version (None when it is)."""
    if "$" in image:
        return f"base image {image!r} uses a build argument; pin a literal version tag"
    if image == "scratch":
        return None
    name, _, digest = image.partition("@")
    if digest:
        return (
            None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else f"image digest {digest!r} is malformed"
        )
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"base image {image!r} has no tag (it means :latest); pin a version tag such as :3.11.14-slim"
    tag = last.partition(":")[2]
    if tag.lower() == "latest" or not re.search(r"\d", tag):
        return f"base image {image!r} is not pinned: use a tag with a version number, never {tag!r}"
    return None


def _copy_sources(item: Instruction) -> tuple[list[str], str]:
    words = item.words()
    if len(words) < 2:
        raise DockerfileSyntaxError(f"line {item.line}: {item.keyword} needs a source and a destination")
    return words[:-1], words[-1]


def _source_problems(source: str, item: Instruction, root: Path, ignore: DockerIgnore) -> list[str]:
    where = f"line {item.line}: {item.keyword} {source!r}"
    clean = source.strip("/") if source not in {".", "./"} else "."
    if source.startswith("/") or ".." in Path(clean).parts:
        return [f"{where}: sources are relative to the build context (the repository root), without '..'"]
    if any(char in clean for char in "*?["):
        matches = [path for path in root.glob(clean)]
        if not matches:
            return [f"{where}: the pattern matches nothing under {root}"]
        paths = matches
    else:
        paths = [root / clean]
        if not paths[0].exists():
            return [f"{where}: {paths[0]} does not exist; build from the repository root"]
    problems: list[str] = []
    for path in paths:
        relative = path.relative_to(root).as_posix()
        if relative != "." and ignore.excluded(relative):
            problems.append(f"{where}: {relative} is excluded by .dockerignore, so the build cannot see it")
            continue
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel_parts = file.relative_to(root).parts
                if file.is_dir() or any(
                    part in JUNK_DIRS or part.endswith(".egg-info") for part in rel_parts
                ):
                    continue
                if file.suffix == ".pyc":
                    continue
                if ignore.excluded(file.relative_to(root).as_posix()):
                    problems.append(
                        f"{where}: {file.relative_to(root).as_posix()} is excluded by .dockerignore "
                        "but the copied folder needs it"
                    )
    return problems


def _module_problems(module: str, member_dir: Path) -> list[str]:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        return [f"ENTRYPOINT module {module!r} cannot be imported; is it spelled as the package's folder?"]
    origin = Path(spec.origin).resolve()
    if member_dir.resolve() not in origin.parents:
        return [f"ENTRYPOINT module {module!r} lives in {origin}, not in the member {member_dir}"]
    if spec.submodule_search_locations is not None:
        if importlib.util.find_spec(f"{module}.__main__") is None:
            return [
                f"ENTRYPOINT module {module!r} is a package without __main__.py; 'python -m' cannot run it"
            ]
    elif 'if __name__ == "__main__"' not in origin.read_text(encoding="utf-8"):
        return [f'ENTRYPOINT module {module!r} has no `if __name__ == "__main__"` block']
    return []


def check_dockerfile(
    text: str,
    service: Service,
    *,
    root: Path = REPO,
    ignore: DockerIgnore | None = None,
    stack_ports: Mapping[str, int] | None = None,
) -> list[str]:
    """Every problem of ``service``'s Dockerfile ``text``; empty when it is good.

    Args:
        text: the Dockerfile.
        service: what the image must run and expose.
        root: the build context (the repository root).
        ignore: the context's .dockerignore (default: ``root``'s).
        stack_ports: port environment variable to default port, as ``pfactory up`` runs the service;
            the HEALTHCHECK must check exactly these.
    """
    try:
        parsed = parse_dockerfile(text)
        return _check(parsed, service, root, ignore or load_dockerignore(root), stack_ports)
    except DockerfileSyntaxError as error:
        return [f"{service.name}: {error}"]


def _check(
    parsed: Dockerfile,
    service: Service,
    root: Path,
    ignore: DockerIgnore,
    stack_ports: Mapping[str, int] | None,
) -> list[str]:
    problems: list[str] = []
    stages = parsed.stages
    final = parsed.final
    if len(stages) < 2:
        problems.append(
            "single stage: build the venv in a builder stage and copy it into a slim runtime stage"
        )
    names: set[str] = set()
    for stage in stages:
        if stage.image.lower() not in names:
            problem = image_pin_problem(stage.image)
            if problem:
                problems.append(f"line {stage.line}: {problem}")
        if stage.name:
            names.add(stage.name)
    members = workspace_closure(service.package, root)
    member_dir = root / members[service.package]

    # copies, adds and the uv sync layering
    installing: tuple[Stage, Instruction] | None = None
    for stage in stages:
        for item in stage.instructions:
            if item.keyword in {"COPY", "ADD"}:
                source_from = item.flags.get("from")
                sources, _ = _copy_sources(item)
                if item.keyword == "ADD":
                    remote = [s for s in sources if "://" in s or s.startswith("git@")]
                    if remote:
                        problems.append(
                            f"line {item.line}: ADD of remote {remote}: download in a RUN with a checksum, "
                            "or COPY a file from the repository"
                        )
                        continue
                if source_from is not None:
                    if parsed.stage(source_from) is None:
                        problem = image_pin_problem(source_from)
                        if problem:
                            problems.append(f"line {item.line}: COPY --from: {problem}")
                    continue
                for source in sources:
                    problems.extend(_source_problems(source, item, root, ignore))
            if item.keyword == "RUN":
                for words in uv_sync_commands(item):
                    where = f"line {item.line}: {' '.join(words)!r}"
                    if "--frozen" not in words:
                        problems.append(f"{where}: add --frozen so the image installs exactly uv.lock")
                    if "--no-dev" not in words:
                        problems.append(f"{where}: add --no-dev; the dev group (pytest, mypy...) stays out")
                    package = _option(words, "--package")
                    if package != service.package:
                        problems.append(f"{where}: use --package {service.package} (got {package!r})")
                    if "--no-install-workspace" not in words and "--no-install-project" not in words:
                        installing = (stage, item)
    if installing is None:
        problems.append(
            f"no RUN 'uv sync --frozen --no-dev --package {service.package}' that installs the member itself"
        )
    else:
        stage, sync = installing
        copied = [
            (item, source.strip("/"))
            for item in stage.all("COPY")
            if "from" not in item.flags and item.line < sync.line
            for source in _copy_sources(item)[0]
        ]

        def covered(path: str) -> bool:
            return any(
                path == source or path.startswith(source + "/") or source == "." for _, source in copied
            )

        for needed in ["pyproject.toml", "uv.lock"] + [
            f"{folder}/{part}" for folder in members.values() for part in ("pyproject.toml", "src")
        ]:
            if not covered(needed):
                problems.append(
                    f"stage {stage.name or stage.index}: nothing copies {needed} before the installing "
                    f"uv sync (line {sync.line}); {service.package} needs {sorted(members)}"
                )
        venv = stage.env().get("UV_PROJECT_ENVIRONMENT")
        if not venv:
            problems.append(
                f"stage {stage.name or stage.index}: set UV_PROJECT_ENVIRONMENT (the venv to copy)"
            )
        elif stage is not final:
            venv = venv.rstrip("/")
            takes_venv = any(
                item.flags.get("from") in {stage.name, str(stage.index)}
                and [word.rstrip("/") for word in item.words()] == [venv, venv]
                for item in final.all("COPY")
            )
            if not takes_venv:
                problems.append(f"final stage: COPY --from={stage.name} {venv} {venv} (the same path)")
            path = final.env().get("PATH", "")
            if not path.startswith(f"{venv}/bin"):
                problems.append(f"final stage: ENV PATH={venv}/bin:$PATH so 'python' is the venv's")

    problems.extend(_runtime_problems(final, service, root, stack_ports, member_dir / "src"))
    problems.extend(_secret_problems(parsed))
    return problems


def _runtime_problems(
    final: Stage, service: Service, root: Path, stack_ports: Mapping[str, int] | None, member_src: Path
) -> list[str]:
    """The final stage: non-root numeric USER, EXPOSE, HEALTHCHECK, ENTRYPOINT, runtime packages."""
    problems: list[str] = []
    users = final.all("USER")
    if not users:
        problems.append("final stage: no USER, so it runs as root; add USER 10001:10001 (a numeric id)")
    else:
        user = users[-1].rest.strip()
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            problems.append(
                f"line {users[-1].line}: USER {user!r} must be numeric (uid[:gid]) so runAsNonRoot can verify it"
            )
        elif int(uid) == 0:
            problems.append(f"line {users[-1].line}: USER {user!r} is root; use a non-zero uid such as 10001")
    exposed: set[int] = set()
    for item in final.all("EXPOSE"):
        for word in item.rest.split():
            port = word.partition("/")[0]
            if not port.isdigit():
                problems.append(f"line {item.line}: EXPOSE {word!r} is not a literal port")
            else:
                exposed.add(int(port))
    if exposed != set(service.ports):
        problems.append(
            f"final stage: EXPOSE {sorted(exposed)} but the service listens on {sorted(service.ports)}"
        )
    checks = final.all("HEALTHCHECK")
    if not checks or checks[-1].rest.strip().upper() == "NONE":
        problems.append("final stage: no HEALTHCHECK; check /health with python (slim images have no curl)")
    else:
        problems.extend(_healthcheck_problems(checks[-1], final, root, stack_ports))
    entrypoints = final.all("ENTRYPOINT")
    if not entrypoints:
        problems.append(f'final stage: no ENTRYPOINT; add ENTRYPOINT ["python", "-m", "{service.module}"]')
    else:
        entry = entrypoints[-1].json_form()
        if entry is None or len(entry) != 3 or entry[:2] != ["python", "-m"]:
            problems.append(
                f'line {entrypoints[-1].line}: ENTRYPOINT must be the exec form ["python", "-m", "{service.module}"]'
            )
        elif entry[2] != service.module:
            problems.append(
                f"line {entrypoints[-1].line}: ENTRYPOINT runs {entry[2]!r}, not {service.module!r}"
            )
        else:
            problems.extend(_module_problems(entry[2], member_src))
    for name in service.runtime_packages:
        if not any(
            re.search(rf"apt-get install\b.*\b{re.escape(name)}\b", item.rest) for item in final.all("RUN")
        ):
            problems.append(f"final stage: apt-get install {name} (the service needs it at run time)")

    return problems


def _secret_problems(parsed: Dockerfile) -> list[str]:
    """ENV and ARG entries that look like credentials, by name or by value."""
    problems: list[str] = []
    stages = parsed.stages
    final = parsed.final
    for stage in stages:
        for item in stage.all("ENV") + stage.all("ARG") + ([] if stage is not final else parsed.global_args):
            if item.keyword == "ENV":
                pairs = env_pairs(item)
            else:
                key, _, value = item.rest.partition("=")
                pairs = {key.strip(): value}
            for key, value in pairs.items():
                if SECRET_NAME.search(key) or SECRET_VALUE.search(value):
                    problems.append(
                        f"line {item.line}: {item.keyword} {key} looks like a secret; images are readable by "
                        "anyone who pulls them: pass it at run time (environment, Kubernetes Secret)"
                    )
    return problems


def _healthcheck_problems(
    item: Instruction, final: Stage, root: Path, stack_ports: Mapping[str, int] | None
) -> list[str]:
    _, _, command = item.rest.partition("CMD")
    if not item.rest.startswith("CMD"):
        return [f"line {item.line}: HEALTHCHECK must be 'HEALTHCHECK [options] CMD [...]'"]
    words = Instruction("CMD", command, item.line, {}, command.strip()).words()
    if not words or words[0] != "python":
        return [f"line {item.line}: the HEALTHCHECK must run python (slim images have no curl or wget)"]
    problems: list[str] = []
    text = " ".join(words)
    if len(words) > 1 and words[1].startswith("/"):
        sources = [
            _copy_sources(copy)[0]
            for copy in final.all("COPY")
            if "from" not in copy.flags and _copy_sources(copy)[1] == words[1]
        ]
        if not sources:
            return [f"line {item.line}: the HEALTHCHECK script {words[1]} is not COPYed into the final stage"]
        text = (root / sources[0][0]).read_text(encoding="utf-8")
    if "/health" not in text:
        problems.append(f"line {item.line}: the HEALTHCHECK does not request /health")
    if stack_ports is not None:
        checked = {
            word.partition("=")[0]: int(word.partition("=")[2])
            for word in words[2:]
            if re.fullmatch(r"PF_[A-Z_]+=\d+", word)
        }
        if checked != dict(stack_ports):
            problems.append(
                f"line {item.line}: the HEALTHCHECK checks {checked}, but the service runs on {dict(stack_ports)} "
                "(pfactory.cli.stack); pass each as ENV_VAR=DEFAULT"
            )
    return problems
