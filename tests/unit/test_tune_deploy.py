"""The tune worker Job (Kubernetes) and compose profile run the real `tune` command line against a
PostgreSQL study, on the volumes the trainer uses."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import REPO
from tml.projects.twhin.tune import parse_args


def k8s_documents(name: str) -> list[dict]:
    return list(yaml.safe_load_all((REPO / "deploy" / "k8s" / name).read_text()))


def test_kubernetes_tune_job_runs_parallel_workers_against_postgresql() -> None:
    (job,) = k8s_documents("tune-job.yaml")
    assert job["kind"] == "Job" and job["spec"]["parallelism"] > 1
    assert "completions" not in job["spec"], "a work queue: workers exit when the study is done"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "keep the image's ENTRYPOINT"
    assert container["args"][:3] == ["python", "-m", "tml.projects.twhin.tune"]
    args = parse_args(container["args"][3:])
    (storage,) = [e for e in container["env"] if e["name"] == "TML_TUNE_STORAGE"]
    secret = storage["valueFrom"]["secretKeyRef"]
    (db_secret,) = [d for d in k8s_documents("tune-postgres.yaml") if d["kind"] == "Secret"]
    assert secret["name"] == db_secret["metadata"]["name"]
    assert db_secret["stringData"][secret["key"]].startswith("postgresql://")
    claims = {d["metadata"]["name"] for d in k8s_documents("storage.yaml")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "configMap" in mounts[str(Path(args.config_yaml_path).parent)]
    save = next(v for path, v in mounts.items() if args.save_dir.startswith(path + "/"))
    assert save["persistentVolumeClaim"]["claimName"] in claims  # trials on a shared volume
    assert pod["terminationGracePeriodSeconds"] >= 60  # room for the trials' checkpoints


def test_compose_tune_profile_shares_one_postgresql_study() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    tune, db = services["tune"], services["tune-db"]
    assert tune["profiles"] == db["profiles"] == ["tune"]
    assert tune["depends_on"] == {"tune-db": {"condition": "service_healthy"}}
    assert tune["command"][:3] == ["python", "-m", "tml.projects.twhin.tune"]
    # compose fills ${VAR:-default} from the environment; parse it as it runs with the defaults
    command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in tune["command"]]
    args = parse_args(command[3:])
    assert args.storage.startswith("postgresql://tune:") and "@tune-db:5432/tune" in args.storage
    assert (
        db["environment"]["POSTGRES_USER"] == "tune" and db["environment"]["POSTGRES_DB"] == "tune"
    )
    assert args.save_dir.startswith("/save/") and "./runs:/save" in tune["volumes"]
