"""Projects: ``project-init`` (layout, files, Dockerfile, git) and ``project launch``.

A project is a directory ``<workspace base>/NAME`` (``~/workspace/NAME`` by default). It is
what a container of the same name mounts at ``/workspace``, and its ``Dockerfile`` is what
``image create/update`` builds as ``NAME-<user>-image``. ``project-init`` writes that
Dockerfile through the image service exactly as ``image create NAME --no-build`` does (same
checks, same renderer, same tiers), then adds a data-science layout, ``requirements.txt``,
a README and an ML ``.gitignore``, and makes a git repository with a first commit.

Re-running ``project-init`` on an existing project adds what is missing and keeps every
file that is already there (a user's edited Dockerfile or README is never replaced).
``project launch NAME`` builds the image if needed, then deploys
(:mod:`ds01.services.container.deploy`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.adapters.user_fs import make_user_dirs
from ds01.domain.naming import project_image_name, validate_name
from ds01.domain.packages import (
    PackagePlan,
    TierName,
    UseCase,
    parse_use_case,
    plan_packages,
    split_package_list,
)
from ds01.errors import ErrorCode, NotFoundError
from ds01.services.audit import audited
from ds01.services.container.deploy import Orchestrator, Silent
from ds01.services.image.service import ImageCreateRequest, ImageService
from ds01.services.project.files import ProjectFiles

if TYPE_CHECKING:
    from ds01.domain.actor import Actor
    from ds01.services.container.create import ProgressFn as PullProgressFn
    from ds01.services.container.deploy import DeployRequest, DeployResult, Narrator
    from ds01.services.context import AppContext
    from ds01.services.image.build import ProgressFn as BuildProgressFn

__all__ = [
    "LAYOUT",
    "ProjectInitRequest",
    "ProjectInitResult",
    "ProjectService",
    "ProjectView",
    "gitignore_text",
    "readme_text",
    "requirements_text",
]

#: The data-science layout; each directory gets a ``.gitkeep`` so git records it.
LAYOUT = ("data/raw", "data/processed", "notebooks", "src", "models", "outputs")

_GITIGNORE = """\
# Written by `ds01 project-init`. Data, models and outputs are large and change often:
# they live in the directories below, not in git history.
/data/raw/*
/data/processed/*
/models/*
/outputs/*
!/data/raw/.gitkeep
!/data/processed/.gitkeep
!/models/.gitkeep
!/outputs/.gitkeep

# Checkpoints and weights, wherever they end up
*.pt
*.pth
*.ckpt
*.safetensors
*.h5
*.onnx
checkpoints/

# Experiment trackers and caches (DS01 images keep pip/torch/HF caches in .cache/)
wandb/
mlruns/
lightning_logs/
runs/
.cache/

# Python and Jupyter
__pycache__/
*.py[cod]
*.egg-info/
.venv/
venv/
.ipynb_checkpoints/
.pytest_cache/
.mypy_cache/

# Secrets and editors
.env
*.key
.vscode/
.idea/
.DS_Store
"""


def gitignore_text() -> str:
    """The ML ``.gitignore`` of a new project."""
    return _GITIGNORE


def requirements_text(name: str, framework: str, plan: PackagePlan) -> str:
    """``requirements.txt``: the pip packages the image adds to the framework, by tier."""
    titles = {
        TierName.BASE: "base tier (Jupyter, data science)",
        TierName.USE_CASE: f"use-case tier ({plan.use_case.value})",
        TierName.CUSTOM: "your packages (custom tier)",
    }
    lines = [
        f"# Python packages of the project {name}: what its image installs on top of the",
        f"# framework ({framework}). DS01 builds the image from ./Dockerfile, not from this file:",
        f"# add packages to the image with 'ds01 image update {name} --add-pip PKG'.",
        "# Elsewhere (a laptop, CI): pip install -r requirements.txt",
    ]
    for tier in plan.tiers:
        if tier.name in titles and tier.pip:
            lines += ["", f"# {titles[tier.name]}", *(spec.text for spec in tier.pip)]
    return "\n".join(lines) + "\n"


def readme_text(name: str, user: str, description: str | None, image: str) -> str:
    """The README of a new project: layout and the commands to use it."""
    about = description or "Describe your project here."
    return f"""# {name}

{about}

## Layout

| directory | what goes there |
|---|---|
| `data/raw/` | original data, never edited (not in git) |
| `data/processed/` | data derived from it (not in git) |
| `notebooks/` | Jupyter notebooks |
| `src/` | your code |
| `models/` | trained models and checkpoints (not in git) |
| `outputs/` | figures, logs, results (not in git) |

`Dockerfile` describes the image `{image}` (framework, packages, your user);
`requirements.txt` lists its Python packages for use outside DS01.

## Working on the GPU server

```console
$ ds01 project launch {name}        # build the image if needed, create a container, open a shell
$ ds01 container run {name}         # later: open a shell again (starts it if stopped)
$ ds01 image update {name} --add-pip "PKG"   # add a package to the image
$ ds01 container retire {name}      # done for now: remove the container, free the GPU
```

Inside the container this directory is `/workspace`: files here are kept when the container
goes away; everything else in the container is temporary.

Created by {user} with `ds01 project-init`.
"""


@dataclass(frozen=True)
class ProjectInitRequest:
    """``project-init`` choices. ``None`` means the image builder's default."""

    name: str
    use_case: str | None = None  # --type; default: none
    framework: str | None = None
    version: str | None = None
    arch: str | None = None
    jupyter: bool = True
    datascience: bool = True
    pip: tuple[str, ...] = ()  # flag values, "a b" each
    apt: tuple[str, ...] = ()
    description: str | None = None
    git: bool = True


@dataclass(frozen=True)
class ProjectInitResult:
    """What ``project-init`` made and kept; ``to_json`` gives the ``--json`` object."""

    name: str
    path: str
    image: str
    dockerfile: str
    framework: str
    tiers: tuple[str, ...]
    created: tuple[str, ...]  # paths made, relative to the project
    kept: tuple[str, ...]  # files that existed and were left alone
    git: str  # "committed", "existing repository", "skipped: ...", "failed: ..."
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectView:
    """One of the user's projects (a directory in the workspace base)."""

    name: str
    path: Path
    has_dockerfile: bool


def _entries(values: Sequence[str]) -> list[str]:
    return [entry for value in values for entry in split_package_list(value)]


#: ``project-init`` flags that mean what the ``image create`` flags of the same name mean.
_IMAGE_FLAGS = ("framework", "version", "arch", "jupyter", "datascience", "pip", "apt")


def _image_request(req: ProjectInitRequest, use_case: UseCase) -> ImageCreateRequest:
    """The ``image create NAME --no-build`` that writes the project's Dockerfile."""
    passed = {flag: getattr(req, flag) for flag in _IMAGE_FLAGS}
    return ImageCreateRequest(name=req.name, use_case=use_case.value, build=False, **passed)


@dataclass
class _Tally:
    """What ``project-init`` made (paths relative to the project), kept, and has to say."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ProjectService:
    """Project use cases for one acting user."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def base(self, actor: Actor) -> Path:
        return self.ctx.settings.workspace_base(actor.name, actor.home)

    def projects(self, actor: Actor) -> list[ProjectView]:
        """The directories in the workspace base, by name (hidden ones left out)."""
        base = self.base(actor)
        try:
            entries = sorted(base.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise NotFoundError(
                f"Cannot read your workspace {base}: {exc.strerror or exc}.",
                hint="Check its permissions.",
            ) from exc
        return [
            ProjectView(p.name, p, (p / "Dockerfile").is_file())
            for p in entries
            if p.is_dir() and not p.name.startswith(".")
        ]

    # -- project-init -----------------------------------------------------------------

    def init(
        self, actor: Actor, req: ProjectInitRequest, *, narrator: Narrator | None = None
    ) -> ProjectInitResult:
        """Create (or complete) the project ``req.name``; see the module docstring.

        Every input is checked before anything is written: a bad name, package or
        framework exits 2 and leaves nothing behind.
        """
        say = narrator or Silent()
        validate_name(req.name, what="project name")
        use_case = parse_use_case(req.use_case) if req.use_case else UseCase.NONE
        plan = plan_packages(
            use_case=use_case,
            jupyter=req.jupyter,
            datascience=req.datascience,
            pip=_entries(req.pip),
            apt=_entries(req.apt),
        )
        images = ImageService(self.ctx)
        project = images.files.project_dir(actor, req.name)  # refuses a foreign directory
        image = project_image_name(req.name, actor.name)
        with audited(self.ctx, actor, "project.init", str(project)) as audit:
            say.phase(2, 3, "Files and Dockerfile", "image")
            tally = _Tally()
            dockerfile = project / "Dockerfile"
            framework, tiers = "", plan.tier_labels()
            if dockerfile.exists():
                tally.kept.append("Dockerfile")
                tally.notes.append(
                    "Kept the existing Dockerfile; to replace it: "
                    f"ds01 image create {req.name} --force --no-build ..."
                )
            else:
                result = images.create(actor, _image_request(req, use_case))
                framework, tiers = result.framework, result.tiers
                tally.notes.extend(result.notes)
                tally.created.append("Dockerfile")
                say.note(f"Dockerfile for {image} (base {result.base})")
            tally.created += self._layout(actor, project)
            self._write_files(
                actor, project, req, framework=framework, plan=plan, image=image, tally=tally
            )
            say.note("layout: " + ", ".join(LAYOUT))
            say.phase(3, 3, "Git repository", "git")
            git = self._git(actor, project, req.git, tally.notes)
            say.note(f"git: {git}")
            audit.add(created=tally.created, kept=tally.kept, git=git, use_case=use_case.value)
        return ProjectInitResult(
            name=req.name,
            path=str(project),
            image=image,
            dockerfile=str(dockerfile),
            framework=framework,
            tiers=tuple(tiers),
            created=tuple(tally.created),
            kept=tuple(tally.kept),
            git=git,
            notes=tuple(tally.notes),
        )

    def _write_files(
        self,
        actor: Actor,
        project: Path,
        req: ProjectInitRequest,
        *,
        framework: str,
        plan: PackagePlan,
        image: str,
        tally: _Tally,
    ) -> None:
        """``requirements.txt``, the README and ``.gitignore``, each only where missing."""
        files = {
            "requirements.txt": requirements_text(req.name, framework or "see Dockerfile", plan),
            "README.md": readme_text(req.name, actor.name, req.description, image),
            ".gitignore": gitignore_text(),
        }
        for relative, text in files.items():
            if self._write_new(actor, project / relative, text):
                tally.created.append(relative)
            else:
                tally.kept.append(relative)

    def _layout(self, actor: Actor, project: Path) -> list[str]:
        top = Path(os.path.realpath(project))  # checked as the user's by project_dir
        made: list[str] = []
        for relative in LAYOUT:
            if not (top / relative).is_dir():
                make_user_dirs(actor, top, top / relative)
                made.append(relative + "/")
            self._write_new(actor, project / relative / ".gitkeep", "")
        return made

    def _write_new(self, actor: Actor, path: Path, text: str) -> bool:
        """Write ``path`` unless something is there already (never replace a user's file)."""
        if path.exists() or path.is_symlink():
            return False
        ProjectFiles(self.ctx).write(actor, path, text)
        return True

    # -- git --------------------------------------------------------------------------

    def _git(self, actor: Actor, project: Path, wanted: bool, notes: list[str]) -> str:
        """``git init`` and a first commit, as the user; problems become notes, because
        the project itself is complete without them."""
        if not wanted:
            return "skipped: --no-git"
        if (project / ".git").exists():
            return "existing repository"
        git = shutil.which("git")
        if git is None:
            notes.append("git is not installed here, so the project is not a git repository.")
            return "skipped: git not installed"
        run = _GitRunner(git, actor, project)
        identity: list[str] = []
        if run("config", "--get", "user.email").returncode != 0:
            # No identity configured: this commit says who made it; their config is untouched.
            email = f"{actor.name}@{socket.getfqdn()}"
            identity = ["-c", f"user.name={actor.name}", "-c", f"user.email={email}"]
            notes.append(
                f"git has no name/email for you; the first commit uses {actor.name} <{email}>. "
                'Set yours: git config --global user.name "..." and user.email "..."'
            )
        steps: list[tuple[str, ...]] = [
            ("-c", "init.defaultBranch=main", "init", "-q"),
            ("add", "-A"),
            (
                *identity,
                "commit",
                "-q",
                "-m",
                f"Start the project {project.name} (ds01 project-init)",
            ),
        ]
        for argv in steps:
            proc = run(*argv)
            if proc.returncode != 0:
                reason = (proc.stderr or proc.stdout).strip().splitlines()
                detail = reason[-1] if reason else f"exit code {proc.returncode}"
                notes.append(
                    f"git {' '.join(a for a in argv if not a.startswith('user.'))} failed: {detail}"
                )
                return f"failed: {detail}"
        return "committed"


class _GitRunner:
    """Runs git in the project as the user (dropping root's rights when DS01 acts for one)."""

    def __init__(self, git: str, actor: Actor, project: Path) -> None:
        self.git = git
        self.project = project
        self.env: Mapping[str, str] = {
            "HOME": actor.home,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "GIT_TERMINAL_PROMPT": "0",
        }
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0 and actor.uid != 0:
            self.as_user = {"user": actor.uid, "group": actor.gid, "extra_groups": []}

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.git, "-C", str(self.project), *argv],
            env=dict(self.env),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            **self.as_user,
        )


# -- project launch -------------------------------------------------------------------


def launch(
    ctx: AppContext,
    actor: Actor,
    req: DeployRequest,
    *,
    narrator: Narrator | None = None,
    on_build: BuildProgressFn | None = None,
    on_pull: PullProgressFn | None = None,
) -> DeployResult:
    """``project launch NAME``: the project must exist; then build if needed and deploy."""
    validate_name(req.name, what="project name")
    project = ProjectService(ctx).base(actor) / req.name
    if not (project / "Dockerfile").is_file():
        raise NotFoundError(
            f"{project} has no Dockerfile, so there is no project {req.name!r} to launch.",
            hint=f"Create it first: ds01 project-init {req.name}",
            code=ErrorCode.UNKNOWN_PROJECT,
        )
    return Orchestrator(ctx, narrator, on_build=on_build, on_pull=on_pull).deploy(actor, req)
