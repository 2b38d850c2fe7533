"""Store URLs, passwords, locks, the journal's repair and liveness: the small pieces that
several machines sharing one study rely on."""

from __future__ import annotations

import json
import multiprocessing
import time

import optuna
import pytest

from sweeper.config import redacted, without_password
from sweeper.errors import ConfigError
from sweeper.search.liveness import HEARTBEAT_ATTR, Heartbeat, is_alive, worker_id
from sweeper.search.storage import open_storage, repair_journal
from sweeper.tracking import stores


def test_postgresql_urls_get_an_installed_driver(monkeypatch):
    url = "postgresql://u:p@db:5432/optuna"
    monkeypatch.setattr(stores, "_has", lambda m: m == "psycopg2")
    assert stores.driver_url(url, "search.storage") == "postgresql+psycopg2://u:p@db:5432/optuna"
    monkeypatch.setattr(stores, "_has", lambda m: m in ("psycopg", "psycopg2"))
    assert stores.driver_url(url, "search.storage") == "postgresql+psycopg://u:p@db:5432/optuna"
    assert stores.driver_url("postgresql+psycopg2://u@db/x", "k") == "postgresql+psycopg2://u@db/x"
    monkeypatch.setattr(stores, "_has", lambda m: False)
    with pytest.raises(ConfigError, match=r"search.storage: no PostgreSQL driver .*\*\*\*.*sweeper\[postgres\]"):
        stores.driver_url(url, "search.storage")
    assert stores.driver_url("sqlite:///x.db", "k") == "sqlite:///x.db"


def test_passwords_never_reach_what_is_written():
    assert without_password("postgresql+psycopg://me:pa:ss@db:5432/x") == "postgresql+psycopg://me@db:5432/x"
    assert without_password("search.storage=postgresql://me:pw@h/x") == "search.storage=postgresql://me@h/x"
    for kept in ("http://host:5000", "sqlite:///a/b.db", "postgresql://me@h/x", "lr=0.1"):
        assert without_password(kept) == kept
    tree = {"a": ["mysql://u:secret@h/db", 3], "b": {"c": "http://u:secret@h:1/"}, "d": None}
    assert "secret" not in json.dumps(redacted(tree)) and redacted(tree)["a"][1] == 3


def _hold(path: str, log: str, i: int) -> None:
    from sweeper.tracking.stores import held

    for _ in range(3):
        with held(f"journal:///{path}", "sweeper.study.s"):
            with open(log, "a") as f:
                f.write(f"in {i}\n")
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(f"out {i}\n")


def test_a_file_store_lock_admits_one_process_at_a_time(tmp_path):
    log = tmp_path / "log"
    procs = [multiprocessing.get_context("spawn").Process(target=_hold, args=(str(tmp_path / "x.journal"), str(log), i))
             for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = log.read_text().splitlines()
    assert len(lines) == 18
    for enter, leave in zip(lines[::2], lines[1::2]):  # never two inside at once
        assert enter.replace("in", "out") == leave


def test_a_partial_last_record_is_dropped_once(tmp_path, capsys):
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker')
    assert repair_journal(path) is True
    assert path.read_bytes() == whole
    assert "partial record (22 bytes" in capsys.readouterr().err
    assert repair_journal(path) is False  # whole again: nothing to do
    path.write_bytes(b'{"op_code"')  # nothing whole at all
    assert repair_journal(path) is True and path.read_bytes() == b""


def test_opening_a_cut_journal_repairs_it_and_the_study_goes_on(tmp_path):
    path = tmp_path / "optuna.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(path))).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "trial_id"')
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert len(again.trials) == 3


def test_worker_ids_carry_the_host_identity_and_liveness_follows_it(monkeypatch):
    monkeypatch.setenv("SWEEPER_HOST", "node-7:job-42")  # scheduler ids may hold ':'
    me = worker_id()
    assert me.startswith("node-7:job-42:")
    assert is_alive(me, heartbeat=None)  # this host: the process itself is checked
    dead_here = me.rsplit(":", 2)[0] + ":999999999:1.00"
    assert not is_alive(dead_here, heartbeat=time.time())
    monkeypatch.setenv("SWEEPER_HOST", "another-node")  # seen from another machine: the heartbeat
    now = time.time()
    assert is_alive(me, heartbeat=now - 5, now=now, timeout=10)
    assert not is_alive(me, heartbeat=now - 11, now=now, timeout=10)
    assert not is_alive(me, heartbeat=None, now=now, timeout=10)


def test_the_heartbeat_stamps_a_running_trial_until_it_ends(tmp_path):
    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    with Heartbeat(storage, trial._trial_id, interval=0.05):
        time.sleep(0.3)
        first = storage.get_trial(trial._trial_id).user_attrs[HEARTBEAT_ATTR]
        time.sleep(0.3)
        second = storage.get_trial(trial._trial_id).user_attrs[HEARTBEAT_ATTR]
    assert second > first
    stopped = storage.get_trial(trial._trial_id).user_attrs[HEARTBEAT_ATTR]
    time.sleep(0.3)  # the thread has ended: no stamp after the trial stopped training
    assert storage.get_trial(trial._trial_id).user_attrs[HEARTBEAT_ATTR] == stopped
    study.tell(trial, 1.0)
