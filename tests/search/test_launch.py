"""The launchers without a cluster: their settings and refusals on the submitting node,
the command each job runs (through submitit's local executor), and the Kubernetes Job
(checked against the kubernetes client's models, and one pod's command run here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from sweeper.errors import ConfigError
from sweeper.search.launch import SweepJob, check_reachable, gpus_per_node, job_argv
from sweeper.search.settings import LauncherSettings, SearchSettings, parse_launcher

FAST = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=1", "search/pruner=none",
        "search.register_model=false", "tracking=none"]


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full.pop("SWEEPER_DDP_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


def test_launcher_keys_are_checked_one_line_each():
    problems: list[str] = []
    parse_launcher({"name": "slurm", "jobs": 0, "cpus": 4, "setup": "module load cuda", "wait": "yes"}, problems)
    assert any(p.startswith("search.launcher.jobs must be an integer >= 1") for p in problems)
    assert any(p.startswith("search.launcher.cpus: not a key of the slurm launcher") and "cpus_per_task" in p
               for p in problems)
    assert any(p.startswith("search.launcher.wait must be true or false") for p in problems)
    assert len(problems) == 3  # a single setup line is taken as a list of one
    problems = []
    got = parse_launcher({"name": "slurm", "jobs": 4, "setup": ["module load cuda"],
                          "additional_parameters": {"account": "lab"}}, problems)
    assert not problems and got.jobs == 4 and got.setup == ("module load cuda",) and got.remote
    parse_launcher({"name": "pbs"}, problems)
    assert problems == ["search.launcher.name must be one of local, slurm, kubernetes, got 'pbs'; "
                        "e.g. search/launcher=slurm"]


def test_each_job_runs_the_users_command_as_a_local_member():
    launcher = LauncherSettings(name="slurm", jobs=3, workers_per_job=2, cpus_per_task=4)
    argv = ["--config-dir", "/p/conf", "search/launcher=slurm", "search.launcher.jobs=3", "search.workers=8",
            "+search.launcher.mem_gb=4", "model=cnn", "search.storage=postgresql://u@h/db"]
    assert job_argv(argv, launcher, SearchSettings(launcher=launcher)) == [
        "--config-dir", "/p/conf", "model=cnn", "search.storage=postgresql://u@h/db",
        "search/launcher=local", "search.workers=2", "search.threads=2"]  # 4 cpus / 2 workers
    assert job_argv(["model=cnn"], launcher, SearchSettings(launcher=launcher, threads=3))[-1] == "search.workers=2"
    gpu = OmegaConf.create({"accelerator": "gpu", "devices": 2})
    assert gpus_per_node(launcher, gpu) == 4  # 2 workers x 2 devices per trial
    assert gpus_per_node(launcher, OmegaConf.create({"accelerator": "cpu", "devices": 2})) is None
    assert gpus_per_node(LauncherSettings(name="slurm", gpus_per_node=1), gpu) == 1


def test_stores_a_node_cannot_reach_are_refused():
    slurm = LauncherSettings(name="slurm")
    with pytest.raises(ConfigError, match=r"search\.storage: jobs on other nodes cannot share the embedded journal"):
        check_reachable(slurm, None, None)
    with pytest.raises(ConfigError, match=r"search\.storage: .*'sqlite:///optuna\.db'.*shared_filesystem=true"):
        check_reachable(slurm, "sqlite:///optuna.db", None)
    with pytest.raises(ConfigError, match=r"tracking\.uri: jobs on other nodes cannot share 'sqlite:///mlflow\.db'"):
        check_reachable(slurm, "postgresql://u@h/db", "sqlite:///mlflow.db")
    check_reachable(slurm, "postgresql+psycopg2://u@h/db", "http://mlflow:5000")
    check_reachable(LauncherSettings(name="slurm", shared_filesystem=True), None, "sqlite:///mlflow.db")


def test_a_refused_launch_creates_nothing(tmp_path):
    out = _cli(tmp_path, "sweep", *FAST, "search/launcher=slurm", "tracking=mlflow")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("sweeper: error: search.storage: jobs on other nodes cannot share the embedded journal")
    assert "Traceback" not in out.stderr and not (tmp_path / "outputs").exists()
    assert not (tmp_path / "mlflow.db").exists()
    out = _cli(tmp_path, "sweep", *FAST, "search/launcher=slurm", "+search.launcher.jobz=2")
    assert out.returncode == 2 and "search.launcher.jobz: not a key of the slurm launcher" in out.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.processes
def test_a_job_runs_the_sweep_through_submitit(tmp_path):
    submitit = pytest.importorskip("submitit")
    journal = tmp_path / "study.journal"
    argv = [*FAST, "search.n_trials=2", "search.study_name=viajob", f"search.storage={journal}"]
    launcher = LauncherSettings(name="slurm", workers_per_job=1)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(SweepJob(job_argv(argv, launcher, SearchSettings(launcher=launcher)), str(tmp_path),
                                   requeue=False, grace_s=30), 0)
    assert job.result() == 0, Path(job.paths.stdout).read_text()[-3000:]
    from sweeper.search.storage import open_storage

    study = optuna.load_study(study_name="viajob", storage=open_storage(str(journal)))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    hosts = {t.user_attrs["sweeper.worker"].split(":")[0] for t in study.trials}
    assert len(hosts) == 1 and hosts.pop().endswith("_0")  # the job's own identity


@pytest.mark.processes
def test_the_kubernetes_job_is_valid_and_one_pods_command_joins_the_study(tmp_path):
    kubernetes = pytest.importorskip("kubernetes")
    journal = tmp_path / "shared" / "study.journal"
    journal.parent.mkdir()
    out = _cli(tmp_path, "sweep", *FAST, "search.n_trials=2", "search.study_name=pods", f"search.storage={journal}",
               "search/launcher=kubernetes", "search.launcher.image=registry.example/sweeper:1",
               "search.launcher.jobs=3", "search.launcher.secret=sweeper-db", "search.launcher.shared_filesystem=true",
               "search.launcher.mem_gb=2")
    assert out.returncode == 0, out.stderr[-3000:]
    path = tmp_path / "outputs" / "sweeps" / "pods" / "job.yaml"
    manifest = yaml.safe_load(path.read_text())
    assert manifest == yaml.safe_load(out.stdout[out.stdout.index("apiVersion"):out.stdout.index("# written to")])
    job = kubernetes.client.ApiClient()._ApiClient__deserialize(manifest, "V1Job")  # the client's own models
    assert job.kind == "Job" and job.spec.completion_mode == "Indexed"
    assert job.spec.completions == job.spec.parallelism == 3
    (container,) = job.spec.template.spec.containers
    assert container.image == "registry.example/sweeper:1" and container.resources.requests["memory"] == "2048Mi"
    env = {e.name: e for e in container.env}
    assert env["SWEEPER_STORAGE"].value_from.secret_key_ref.name == "sweeper-db"
    assert env["SWEEPER_HOST"].value == "$(SWEEPER_POD)"
    assert not any(str(journal) in a for a in container.args)  # the storage comes from the Secret
    # one pod, run here: its command and environment as Kubernetes would give them
    pod_env = {"SWEEPER_POD": "sweeper-pods-0-abcde", "SWEEPER_HOST": "sweeper-pods-0-abcde",
               "SWEEPER_STORAGE": str(journal)}
    ran = _cli(tmp_path, *container.command[1:], *container.args, env=pod_env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    from sweeper.search.storage import open_storage

    study = optuna.load_study(study_name="pods", storage=open_storage(str(journal)))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs["sweeper.worker"].split(":")[0] for t in study.trials} == {"sweeper-pods-0-abcde"}
