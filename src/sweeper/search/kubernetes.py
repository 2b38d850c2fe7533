"""``search/launcher=kubernetes``: a sweep's workers as a Kubernetes Indexed Job.

``jobs`` pods (completions = parallelism = jobs) each run the same ``sweeper sweep``
command as one member of the multi-machine mode, named ``SWEEPER_HOST`` after their pod.
The study's storage URL, password included, comes from a Secret (key
``SWEEPER_STORAGE``) rather than the manifest. The manifest is printed, or applied with
``kubectl`` when ``apply: true``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import ConfigError, SweeperError
from sweeper.search.launch import _drop, gpus_per_node, job_argv
from sweeper.search.progress import say
from sweeper.search.settings import SearchSettings

STORAGE_KEY = "SWEEPER_STORAGE"


def _k8s_name(study: str) -> str:
    name = "".join(c if c.isalnum() else "-" for c in study.lower()).strip("-")
    return f"sweeper-{name}"[:52].rstrip("-")


def manifest(argv: list[str], settings: SearchSettings, trainer: Any) -> dict[str, Any]:
    """The Job: one container per pod running ``sweeper sweep`` with the user's arguments."""
    launcher = settings.launcher
    if not launcher.image:
        raise ConfigError("search.launcher.image: the Kubernetes launcher needs the container image that has "
                          "sweeper and your project installed, e.g. search.launcher.image=registry/lab/sweeper:1")
    args = job_argv(argv, launcher, settings)
    env: list[dict[str, Any]] = [
        {"name": "SWEEPER_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SWEEPER_HOST", "value": "$(SWEEPER_POD)"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if launcher.secret:
        env.append({"name": STORAGE_KEY, "valueFrom": {"secretKeyRef": {"name": launcher.secret, "key": STORAGE_KEY}}})
        # the storage comes from the Secret, not from the manifest
        args = [a for a in _drop(args) if not a.lstrip("+").startswith("search.storage=")]
        args += ["search/launcher=local", f"search.workers={launcher.workers_per_job}",
                 f"search.storage=${{oc.env:{STORAGE_KEY}}}"]
    cpus = launcher.cpus_per_task or launcher.workers_per_job
    requests: dict[str, Any] = {"cpu": str(cpus)}
    limits: dict[str, Any] = {}
    if launcher.mem_gb:
        requests["memory"] = f"{int(launcher.mem_gb * 1024)}Mi"
    gpus = gpus_per_node(launcher, trainer)
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {
        "name": "sweeper",
        "image": launcher.image,
        "command": ["sweeper", "sweep"],
        "args": args,
        "env": env,
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
    }
    name = _k8s_name(settings.study_name)
    labels = {"app.kubernetes.io/name": "sweeper", "sweeper/study": name[8:]}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if launcher.namespace:
        metadata["namespace"] = launcher.namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": launcher.jobs,
            "parallelism": launcher.jobs,
            "backoffLimitPerIndex": 2,  # a lost pod is started again; its trial is retried
            "maxFailedIndexes": launcher.jobs,
            "activeDeadlineSeconds": launcher.timeout_min * 60,
            "template": {
                "metadata": {"labels": dict(metadata["labels"])},
                "spec": {
                    "restartPolicy": "Never",
                    # SIGTERM first: the running trial is saved and queued again
                    "terminationGracePeriodSeconds": 120,
                    "containers": [container],
                },
            },
        },
    }


def deliver(cfg: Any, settings: SearchSettings, argv: list[str], study_dir: Path) -> int:
    """Write the manifest next to the study, then print it or ``kubectl apply`` it."""
    job = manifest(argv, settings, cfg.trainer)
    text = yaml.safe_dump(job, sort_keys=False)
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / "job.yaml"
    path.write_text(text)
    if not settings.launcher.apply:
        say(text.rstrip())
        say(f"# written to {path}; start it with `kubectl apply -f {path}`, watch it with "
            f"`kubectl get pods -l sweeper/study={job['metadata']['labels']['sweeper/study']}`")
        return 0
    if shutil.which("kubectl") is None:
        raise SweeperError(f"search.launcher.apply=true needs kubectl on PATH; the manifest is in {path}")
    out = subprocess.run(["kubectl", "apply", "-f", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SweeperError(f"kubectl apply failed: {' '.join(out.stderr.split())[-300:]}; the manifest is in {path}")
    say(out.stdout.strip())
    say(f"see the trials with `sweeper compare {settings.study_name}`")
    return 0
