"""What every worker of a sweep needs to know, written once as JSON by the coordinator."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeper.search.settings import LauncherSettings, SearchSettings

STATIC_METRICS = ("model/num_parameters",)


@dataclass
class SweepPlan:
    study_name: str
    storage: str
    study_dir: str
    overrides: list[str]
    choices: dict[str, str]
    settings: dict[str, Any]
    parent_run_id: str | None = None
    tracking_enabled: bool = True
    started_at: float = 0.0
    deadline: float | None = None
    threads: int = 1
    # Hydra's search path, in order and absolute, so workers compose what this command did
    config_sources: list[dict[str, str]] = field(default_factory=list)
    # the resolved base config (no search, no hydra); a worker that composes anything else stops
    base_config: dict[str, Any] = field(default_factory=dict)
    # the search space as the coordinator parsed it (SearchSpace.to_data)
    space: list[dict[str, Any]] = field(default_factory=list)

    @property
    def search(self) -> SearchSettings:
        data = dict(self.settings)
        data["metrics"] = tuple(data["metrics"])
        data["directions"] = tuple(data["directions"])
        data["enqueue"] = tuple(data.get("enqueue", ()))
        data["undirected"] = tuple(data.get("undirected", ()))
        launcher = dict(data.get("launcher") or {})
        launcher["setup"] = tuple(launcher.get("setup", ()))
        data["launcher"] = LauncherSettings(**launcher)
        return SearchSettings(**data)

    def save(self, path: Path) -> None:
        """Written for this user only (it holds config values), replacing any older plan."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> SweepPlan:
        return cls(**json.loads(Path(path).read_text()))
