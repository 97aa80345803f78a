"""The project image, checked without a Docker engine: the Dockerfile is parsed and its promises
(pinned base, exactly the lock's packages, the code prefect.yaml's entrypoints need, R, a non-root
user) are checked against the repository, .dockerignore and the installed environment."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("interlinked", "flows", "blocks", "analyses")


################################################################################
# Dockerfile and .dockerignore, read the way Docker reads them
################################################################################


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            parts = args.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
            continue
        stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


def commands(stage: Stage) -> list[list[str]]:
    """Every shell command of the stage's RUN instructions, split at && and ;."""
    found = []
    for run in stage.all("RUN"):
        for part in re.split(r"&&|;", run):
            words = shlex.split(part)
            while words and re.fullmatch(r"\w+=\S*", words[0]):
                words.pop(0)  # VAR=value before the command
            if words:
                found.append(words)
    return found


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def copies(stage: Stage) -> list[tuple[list[str], str, dict[str, str]]]:
    """(sources, destination, flags) of each COPY."""
    result = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        flags = {}
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
        result.append((words[:-1], words[-1], flags))
    return result


def _go_pattern(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins; a
    pattern matching a parent directory matches everything below it)."""
    candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    excluded = False
    for raw in patterns:
        exception = raw.startswith("!")
        pattern = raw[1:] if exception else raw
        pattern = pattern.strip().strip("/")
        regex = _go_pattern(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


@pytest.fixture(scope="module")
def dockerfile():
    path = ROOT / "Dockerfile"
    assert path.exists(), "the project image is described by ./Dockerfile"
    return parse_dockerfile(path.read_text())


@pytest.fixture(scope="module")
def final(dockerfile) -> Stage:
    return dockerfile[1][-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_the_dockerignore_matcher_follows_docker_rules():
    patterns = ["*", "!src/", "**/__pycache__", "!keep.txt"]
    assert dockerignore_excludes(patterns, "other.txt")
    assert dockerignore_excludes(patterns, "docs/index.md")
    assert not dockerignore_excludes(patterns, "src/pkg/mod.py")
    assert dockerignore_excludes(patterns, "src/pkg/__pycache__/mod.cpython-311.pyc")
    assert not dockerignore_excludes(patterns, "keep.txt")


################################################################################
# Base image
################################################################################


def test_every_stage_starts_from_the_same_pinned_python(dockerfile):
    _, stages = dockerfile
    stage_names = {stage.name for stage in stages if stage.name}
    images = {stage.image for stage in stages if stage.image not in stage_names}
    assert len(images) == 1, f"the venv is copied between stages, so they need one interpreter: {images}"
    (image,) = images
    repository, _, tag = image.partition(":")
    assert "@sha256:" in image or re.fullmatch(r"\d+\.\d+\.\d+-[a-z0-9-]+", tag), (
        f"{image}: pin the base to a full version (or a digest), not a moving tag"
    )
    assert repository.endswith("python")
    major_minor = ".".join(tag.split(".")[:2])
    assert major_minor == f"{sys.version_info.major}.{sys.version_info.minor}", (
        f"{image}: the lock is made for Python {sys.version_info.major}.{sys.version_info.minor} (make lock)"
    )


################################################################################
# Exactly the lock
################################################################################


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    locked: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not pinned in requirements.lock: {first}"
        locked[canonicalize_name(requirement.name)] = (specs[0].version, block.count("--hash=sha256:"))
    return locked


def test_the_image_installs_the_lock_and_only_the_lock(dockerfile):
    _, stages = dockerfile
    lock_paths = {
        dest.rstrip("/") + ("/requirements.lock" if dest.endswith("/") else "")
        for stage in stages
        for sources, dest, flags in copies(stage)
        if "from" not in flags and sources == ["requirements.lock"]
    }
    assert lock_paths, "requirements.lock is never copied into the build"

    final_venv = None
    for sources, _dest, flags in copies(stages[-1]):
        if "from" in flags:
            assert len(sources) == 1, "only the virtual environment comes from the build stage"
            final_venv = sources[0]
    assert final_venv, "the final stage copies no environment from the build stage"

    into_final_venv = []
    for stage in stages:
        for words in commands(stage):
            installer = " ".join(words[:3])
            if "pip" not in installer or "install" not in words:
                continue
            assert stage is not stages[-1], f"the final stage installs Python packages: {words}"
            if words[0].startswith(final_venv + "/"):
                into_final_venv.append(words)
            else:
                assert not any(final_venv in word for word in words), words

    lock_installs = [w for w in into_final_venv if "-r" in w]
    assert len(lock_installs) == 1, into_final_venv
    (lock_install,) = lock_installs
    assert lock_install[lock_install.index("-r") + 1] in lock_paths
    assert "--require-hashes" in lock_install and "--no-deps" in lock_install, lock_install
    for words in into_final_venv:
        if words is lock_install:
            continue
        assert "--no-deps" in words, f"resolves dependencies outside the lock: {words}"
        targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        assert targets and all(re.search(r"/interlinked-\*?[^/]*\.whl$", t) for t in targets), (
            f"installs something other than this project's wheel: {words}"
        )
    checks = [w for stage in stages for w in commands(stage) if w[0].startswith(final_venv) and "check" in w]
    assert checks, "pip check should confirm at build time that the lock is complete"


def test_the_lock_is_pinned_hashed_and_complete():
    """`pip install --no-deps -r requirements.lock` installs exactly the lock, so the lock must
    hold every dependency (with the extras asked for) of everything in it."""
    locked = _locked()
    for name, (version, hashes) in locked.items():
        assert hashes, f"{name} has no hash in requirements.lock"
        installed = importlib.metadata.version(name)
        assert installed == version, (
            f"{name}: .venv has {installed}, requirements.lock {version} (run `make install`)"
        )

    pyproject = (ROOT / "pyproject.toml").read_text()
    import tomllib

    project = tomllib.loads(pyproject)["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    roots += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    environment = default_environment()
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = list(roots)
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        assert name in locked, f"{requirement} is needed but not in requirements.lock"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name][0]}, but {requirement} is needed"
        )
        for line in importlib.metadata.requires(name) or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(
                dependency.marker.evaluate({**environment, "extra": extra})
                for extra in ("", *requirement.extras)
            ):
                queue.append(dependency)


################################################################################
# The code the deployments need
################################################################################


def _copied_under(final: Stage) -> tuple[str, set[str]]:
    workdir = final.all("WORKDIR")[-1]
    copied = set()
    for sources, dest, flags in copies(final):
        if "from" in flags:
            continue
        for source in sources:
            target = dest if not dest.endswith("/") and dest not in (".", "./") else f"{dest}{source}"
            target = str(Path(workdir, target)) if not target.startswith("/") else target
            assert target == str(Path(workdir, source)), (
                f"COPY {source} lands at {target}, not at its repository path under {workdir}"
            )
            copied.add(source.rstrip("/"))
    return workdir, copied


def _first_party_files(entry: Path) -> set[Path]:
    """The entrypoint file and every first-party module it imports, transitively."""
    found: set[Path] = set()
    queue = [entry]
    while queue:
        path = queue.pop()
        if path in found:
            continue
        found.add(path)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] not in FIRST_PARTY:
                    continue
                base = ROOT.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.exists():
                        queue.append(candidate)
    return found


def _deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text()).get("deployments", [])


def test_the_image_holds_every_entrypoint_and_what_it_imports(final, ignore_patterns):
    _, copied = _copied_under(final)
    deployments = _deployments()
    assert deployments
    for deployment in deployments:
        entry = ROOT / deployment["entrypoint"].split(":")[0]
        assert entry.exists(), deployment["entrypoint"]
        for path in sorted(_first_party_files(entry)):
            relative = path.relative_to(ROOT).as_posix()
            assert any(relative == c or relative.startswith(c + "/") for c in copied), (
                f"{deployment['name']}: {relative} (needed by {deployment['entrypoint']}) is not copied"
            )
            assert not dockerignore_excludes(ignore_patterns, relative), f"{relative} is in .dockerignore"
    # Package data the flows load at run time.
    for data in ROOT.glob("flows/*.R"):
        assert not dockerignore_excludes(ignore_patterns, data.relative_to(ROOT).as_posix())


def test_flow_runs_start_in_the_code_directory(final):
    workdir, _ = _copied_under(final)
    env = env_of(final)
    assert env["INTERLINKED_CODE_DIR"] == workdir
    assert env["PATH"].startswith("/opt/venv/bin:")
    for deployment in _deployments():
        for step in deployment.get("pull") or []:
            directory = (step.get("prefect.deployments.steps.set_working_directory") or {}).get("directory")
            if directory is None:
                continue
            rendered = re.sub(r"\{\{\s*\$(\w+)\s*\}\}", lambda m: env.get(m.group(1), "<unset>"), directory)
            assert rendered == workdir, f"{deployment['name']}: flow runs would start in {rendered}"


def test_the_build_context_has_what_the_copies_need(dockerfile, ignore_patterns):
    _, stages = dockerfile
    for stage in stages:
        for sources, _dest, flags in copies(stage):
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert not dockerignore_excludes(ignore_patterns, source.rstrip("/")), (
                    f"COPY {source}: .dockerignore leaves it out of the build context"
                )
    for heavy in (
        ".venv/bin/python",
        ".git/HEAD",
        ".interlinked/pids",
        "tests/conftest.py",
        "infra/terraform",
    ):
        assert dockerignore_excludes(ignore_patterns, heavy), f"{heavy} would be sent to the build"


################################################################################
# Runtime
################################################################################


def test_r_is_installed_for_script_jobs(final):
    installs = [w for w in commands(final) if w[:1] == ["apt-get"] and "install" in w]
    assert installs, "no apt-get install in the final stage"
    packages = {word for words in installs for word in words}
    assert {"r-base-core", "r-cran-jsonlite"} <= packages
    assert all("--no-install-recommends" in words for words in installs)
    assert any(w[:2] == ["rm", "-rf"] and "/var/lib/apt/lists/*" in w for w in commands(final))


def test_the_image_runs_as_a_non_root_user(final):
    users = final.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    created = [w for w in commands(final) if w[:1] == ["useradd"]]
    assert any(user in (w[w.index("--uid") + 1] if "--uid" in w else "", w[-1]) for w in created), (
        f"USER {user} is not created by useradd"
    )
