"""What ``--guided`` explains, one short paragraph per concept, in DS01's own words.

Kept apart from the commands so the wording can be reviewed (and translated) in one
place. Each text is plain (no markup) and fits a terminal without scrolling; the
``{placeholders}`` are filled by :class:`ds01.cli.guided.Guide` from what it knows.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["TOPICS", "USE_CASE_DESCRIPTIONS"]

TOPICS = MappingProxyType(
    {
        "checks": (
            "DS01 first looks at what you need to work here: whether you can reach the "
            "Docker engine, which limits apply to you, whether a GPU is free right now, "
            "your workspace directory and an SSH key. Nothing is changed by these checks; "
            "run 'ds01 user-setup' again at any time."
        ),
        "docker": (
            "Your code runs in Docker containers. DS01 talks to the Docker engine for you; "
            "that needs your account to be allowed to use it (the 'docker' group on this "
            "server). If it is not, an administrator has to add you."
        ),
        "limits": (
            "The server is shared by many people. Every container you create gets your "
            "group's limits (CPUs, memory, shared memory, processes), fixed when it is "
            "created, so one runaway job cannot slow everyone else down. 'ds01 limits' "
            "shows yours and where each value comes from."
        ),
        "gpu": (
            "DS01 gives each container its own GPU (or MIG slice) from the free ones, "
            "within your quota; nobody else gets that device while your container holds "
            "it. When the container is stopped the hold runs out after a while; when it is "
            "retired or removed the GPU goes straight back to the pool, to the next request "
            "waiting in the queue."
        ),
        "workspace": (
            "Your projects live in {workspace}, one directory each. A project directory is "
            "mounted at /workspace in its container: files you keep there survive when the "
            "container is removed. Everything else inside a container is temporary."
        ),
        "ssh": (
            "An SSH key on this server lets you use git with GitHub or GitLab without "
            "typing passwords: add the public key (the .pub file) to your account there. "
            "To log in to this server from your laptop, make a key on the laptop and copy "
            "it here with 'ssh-copy-id'."
        ),
        "vscode": (
            "VS Code can work directly on this server: the 'Remote - SSH' extension opens "
            "folders here, and the 'Dev Containers' extension attaches to a running "
            "container, so the editor, terminal and debugger run where your GPU is."
        ),
        "project": (
            "A project is a directory under your workspace with a data-science layout, a "
            "Dockerfile that describes its image, a README and a git repository. "
            "'ds01 project launch NAME' builds the image and gives you a container for it."
        ),
        "image": (
            "An image is a frozen software environment: an operating system, Python, the "
            "framework (PyTorch, TensorFlow) and your packages. DS01 builds yours on top of "
            "an AIME framework image from the Dockerfile in your project, in layers that "
            "are reused, so the first build takes minutes and later ones seconds. Every "
            "container of the project starts from it."
        ),
        "container": (
            "A container is a running copy of the image, with your project mounted at "
            "/workspace. Your processes run inside it as you. Containers are disposable: "
            "create a new one whenever you like; only /workspace is kept."
        ),
        "shell": (
            "You get a shell inside the container, in /workspace. Type 'exit' to leave; "
            "the container stops when your last shell exits (unless something still runs "
            "in it). Your files in /workspace stay either way."
        ),
        "background": (
            "The container runs in the background. Open a shell in it with "
            "'ds01 container run {name}', and retire it with 'ds01 container retire "
            "{name}' when you are done so the GPU goes back to others."
        ),
        "packages": (
            "Packages you install inside a container with pip are not part of the image "
            "and disappear with the container. DS01 looks for them and can add them to the "
            "custom tier of your project's Dockerfile, so the next build has them."
        ),
        "retire": (
            "Retiring stops and removes the container and releases its GPU. Your project "
            "directory and the image stay: 'ds01 container deploy {name}' gives you a fresh "
            "container in seconds."
        ),
        "git": (
            "The project is a git repository with a first commit. The .gitignore keeps "
            "data, models, outputs and checkpoints out of git: they are large and belong in "
            "data/ and models/, not in version history."
        ),
    }
)

#: What each ``--type`` is for, shown by the project wizard's picker.
USE_CASE_DESCRIPTIONS = MappingProxyType(
    {
        "none": "only the framework (and Jupyter/data science if you want them)",
        "ml": "classic machine learning: gradient boosting, tuning, explanations",
        "cv": "computer vision: models, augmentation, image processing",
        "nlp": "natural language: transformers, datasets, fine-tuning",
        "rl": "reinforcement learning: environments and agents",
        "audio": "audio and speech processing",
        "ts": "time series: statistics and forecasting",
        "llm": "large language models: fine-tuning and quantisation",
    }
)
