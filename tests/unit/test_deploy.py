"""The scheduler side, verified without a cluster: the Kubernetes manifests against the vendored
Kubeflow CRD schemas (strict) and the exit-code contract, the compose file, and the Slurm
script's container path."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.distributed.test_launch import VENV_BIN, entrypoint_env, entrypoint_vars, write_text
from tests.unit.test_image import dockerfile_stages
from tml.core.errors import EXIT_INPUT_ERROR as INPUT_ERROR

K8S = REPO / "deploy" / "k8s"
SCHEMA_TOOL = REPO / "tools" / "k8s_schemas.py"
PET_VARS = {
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
}


def documents() -> dict[str, dict[str, Any]]:
    """kind -> the document, over every manifest in deploy/k8s (one of each kind, PVCs aside)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "PersistentVolumeClaim":
                assert doc["kind"] not in found, f"two {doc['kind']}s"
                found[doc["kind"]] = doc
    return found


def claims() -> set[str]:
    return {
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all((K8S / "storage.yaml").read_text())
        if doc["kind"] == "PersistentVolumeClaim"
    }


def quantity_gi(value: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(Gi|Mi)", value).groups()
    return float(number) / (1024 if unit == "Mi" else 1)


def project_version() -> str:
    return re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


# --- CRD validation (make lint) ------------------------------------------------------------------


def check_manifests(*paths: Path) -> subprocess.CompletedProcess[str]:
    """`make k8s-check`, the step of `make lint`, on the given manifests."""
    manifests = " ".join(str(p) for p in paths)
    return subprocess.run(
        ["make", "--no-print-directory", "k8s-check", f"K8S_MANIFESTS={manifests}"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


def test_manifests_validate_strictly_against_the_kubeflow_crds() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^lint: .*\bk8s-check\b", makefile, re.M), "make lint runs k8s-check"
    result = check_manifests(*sorted(K8S.glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    for kind, schema in [
        ("PyTorchJob", "kubeflow.org_v1_PyTorchJob.json"),
        ("TrainingRuntime", "trainer.kubeflow.org_v1alpha1_TrainingRuntime.json"),
        ("TrainJob", "trainer.kubeflow.org_v1alpha1_TrainJob.json"),
    ]:
        assert f"({kind} tml-twhin): valid against {schema}" in result.stdout


@pytest.mark.parametrize(
    ("manifest", "old", "new", "message"),
    [
        # A misspelt field, which the API server would drop without a word.
        ("trainingruntime.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true",
         "containers.0.securityContext: Additional properties are not allowed "
         "('readOnlyRootFileSystem' was unexpected)"),
        # A field one level too deep: restartPolicy belongs to the replica spec.
        ("pytorchjob.yaml", "      template:\n        spec:\n",
         "      template:\n        restartPolicy: Never\n        spec:\n",
         "spec.pytorchReplicaSpecs.Master.template: Additional properties are not allowed "
         "('restartPolicy' was unexpected)"),
        # A wrong type.
        ("trainjob.yaml", "numNodes: 2", "numNodes: two",
         "spec.trainer.numNodes: 'two' is not of type 'integer'"),
    ],
)  # fmt: skip
def test_a_broken_manifest_fails_the_lint(
    tmp_path: Path, manifest: str, old: str, new: str, message: str
) -> None:
    text = (K8S / manifest).read_text()
    assert old in text
    broken = write_text(tmp_path / manifest, text.replace(old, new, 1))
    result = check_manifests(broken)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_strict_schema_rejects_unknown_fields_but_keeps_open_maps() -> None:
    spec = importlib.util.spec_from_file_location("k8s_schemas", SCHEMA_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    crd_schema = {
        "type": "object", "description": "dropped",
        "properties": {
            "spec": {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"a": {"type": "string"}}},
        },
    }  # fmt: skip
    assert tool.strict(crd_schema) == {
        "type": "object", "additionalProperties": False,
        "properties": {
            "spec": {"type": "object", "additionalProperties": False,
                     "properties": {"n": {"type": ["integer", "null"]}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"a": {"type": "string"}}},
        },
    }  # fmt: skip


# --- the scheduler contract ----------------------------------------------------------------------


def assert_pod_contract(pod: dict[str, Any], container: dict[str, Any], resources: dict) -> None:
    """What every tml-twhin pod needs, whichever API starts it."""
    assert "command" not in container, "keep the image's ENTRYPOINT (tini, entrypoint.sh)"
    assert container["args"] == ["train"]
    image, tag = container["image"].rsplit(":", 1)
    assert image.endswith("/tml-twhin") and tag == project_version() != "latest"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 1000
    assert security["fsGroupChangePolicy"] == "OnRootMismatch"
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/config"]["configMap"]["name"] == "tml-twhin-config"
    assert {mounts[p]["persistentVolumeClaim"]["claimName"] for p in ("/data", "/save")} == claims()
    assert mounts["/tmp"]["emptyDir"], "XDG_CACHE_HOME=/tmp/.cache with a read-only root"
    shm = mounts["/dev/shm"]["emptyDir"]
    assert shm["medium"] == "Memory"
    # Guaranteed QoS, and the memory-backed /dev/shm fits inside the memory limit.
    assert resources["requests"] == resources["limits"]
    memory = quantity_gi(resources["limits"]["memory"])
    assert memory >= quantity_gi(shm["sizeLimit"]) + 64
    assert pod["terminationGracePeriodSeconds"] >= 30 + 30  # GRACE_PERIOD_S + a checkpoint


def test_pytorchjob_is_the_exit_code_contract() -> None:
    job = documents()["PyTorchJob"]
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    assert job["spec"]["runPolicy"]["backoffLimit"] >= 1
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for spec in replicas.values():
        # The operator retries exit codes >= 128 (stopped by a signal) and fails on 1-127.
        assert spec["restartPolicy"] == "ExitCode"
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"  # the operator reads this container's exit code
        assert_pod_contract(pod, container, container["resources"])
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert int(job["spec"]["nprocPerNode"]) == gpus  # becomes PET_NPROC_PER_NODE
        env = {e["name"]: e["value"] for e in container["env"]}
        assert set(env) <= entrypoint_vars()
        # The operator's PET_* and MASTER_* are the launch settings: none repeated by hand.
        assert not env.keys() & {"NNODES", "NPROC_PER_NODE", "NODE_RANK", "RDZV_ENDPOINT"}


def test_trainjob_and_runtime_are_the_exit_code_contract() -> None:
    docs = documents()
    runtime, job = docs["TrainingRuntime"], docs["TrainJob"]
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
        "name": runtime["metadata"]["name"],
    }  # fmt: skip
    jobset = runtime["spec"]["template"]["spec"]
    assert {"action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}.items() <= (
        jobset["failurePolicy"]["rules"][0].items()
    )
    (node,) = jobset["replicatedJobs"]
    assert node["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    batch = node["template"]["spec"]
    assert batch["backoffLimit"] >= 1
    fail, ignore = batch["podFailurePolicy"]["rules"]
    # Bad input (2) and a failure torchrun already retried (1) are final; 128+ is retried.
    assert fail == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "node", "operator": "In", "values": [1, INPUT_ERROR]},
    }
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    pod = batch["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "node"  # where the Trainer puts the PET_* variables
    trainer = job["spec"]["trainer"]
    assert_pod_contract(pod, container, trainer["resourcesPerNode"])
    assert trainer["numProcPerNode"] == trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
    env = {e["name"] for e in trainer["env"]}
    assert env <= entrypoint_vars() and not env & PET_VARS  # the Trainer refuses PET_* here


def test_docs_exit_code_table_is_the_manifests_contract() -> None:
    """docs/deployment.md's table: the codes a scheduler must not retry are the ones the
    Trainer v2 runtime fails on, and 128+N is the one both APIs retry."""
    docs = (REPO / "docs" / "deployment.md").read_text()
    table = docs.split("## The exit-code contract")[1].split("\n## ")[0]
    rows = {
        m[0]: m[1] for m in re.findall(r"^\| `([0-9+N]+)` \|.*?\| (\*\*\w+\*\*|no)", table, re.M)
    }
    assert set(rows) == {"0", str(INPUT_ERROR), "128+N", "1"}
    assert rows["128+N"] == "**yes**" and rows[str(INPUT_ERROR)] == "**never**"
    runtime = documents()["TrainingRuntime"]["spec"]["template"]["spec"]["replicatedJobs"][0]
    fail_rule = runtime["template"]["spec"]["podFailurePolicy"]["rules"][0]
    assert {str(code) for code in fail_rule["onExitCodes"]["values"]} == {"1", str(INPUT_ERROR)}


# --- docker compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_train_service_reserves_gpus_and_mounts() -> None:
    services = compose()["services"]
    train = services["train"]
    assert train["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert {"./configs:/config:ro", "./data:/data:ro", "./runs:/save"} <= set(train["volumes"])
    assert train.get("shm_size") or train.get("ipc") == "host"
    # NVIDIA's container limits for CUDA and NCCL.
    assert train["ulimits"] == {"memlock": -1, "stack": 64 * 1024 * 1024}
    env = train["environment"]
    assert env["CONFIG_YAML_PATH"].startswith("/config/")
    assert env["SAVE_DIR"].startswith("/save/")
    for service in services.values():
        if "build" in service:  # services of this image (not, say, a database's)
            assert set(service.get("environment", {})) <= entrypoint_vars()
    cpu = services["train-cpu"]
    assert cpu["profiles"] == ["cpu"] and cpu["build"]["args"] == {"VARIANT": "cpu"}
    assert "deploy" not in cpu
    tensorboard = services["tensorboard"]
    assert tensorboard["profiles"] == ["tensorboard"]
    assert tensorboard["build"]["target"] in dockerfile_stages()
    # No authentication: this machine only.
    assert all(port.startswith("127.0.0.1:") for port in tensorboard["ports"])
    # The images `make image` and `make image-cpu` tag: the project's version, not latest.
    version = project_version()
    assert train["image"].endswith(f":-tml-twhin:{version}}}")
    assert cpu["image"].endswith(f":-tml-twhin:{version}-cpu}}")
    assert tensorboard["image"].endswith(f":{version}")


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip


def test_compose_schema_rejects_a_gpu_reservation_without_capabilities(tmp_path: Path) -> None:
    assert check_compose_schema(REPO / "docker-compose.yml").returncode == 0
    text = (REPO / "docker-compose.yml").read_text()
    assert text.count("capabilities: [gpu]") == 1
    broken = write_text(tmp_path / "compose.yml", text.replace("capabilities: [gpu]", ""))
    result = check_compose_schema(broken)
    assert result.returncode == 1 and "'capabilities' is a required property" in result.stdout


# --- Slurm with pyxis ----------------------------------------------------------------------------


def test_slurm_requeues_and_gives_pyxis_the_gpus(tmp_path: Path) -> None:
    """With CONTAINER_IMAGE, srun gets the pyxis flags and NVIDIA_VISIBLE_DEVICES=all, without
    which enroot mounts no driver (and the CUDA image refuses to start)."""
    sbatch = REPO / "deploy" / "slurm" / "train.sbatch"
    assert "#SBATCH --requeue" in sbatch.read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "srun.txt"
    fake_srun = (
        f'#!/bin/bash\necho "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES $*" > {record}\n'
    )
    write_text(bin_dir / "srun", fake_srun).chmod(0o755)
    write_text(bin_dir / "scontrol", "#!/bin/bash\necho node1\n").chmod(0o755)
    env = entrypoint_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="7",
        SLURM_JOB_NAME="tml-twhin", CONTAINER_IMAGE="registry.example.com/tml-twhin:0.1.0",
    )  # fmt: skip
    env.pop("NVIDIA_VISIBLE_DEVICES", None)
    subprocess.run(["bash", str(sbatch)], check=True, env=env, cwd=tmp_path, timeout=60)
    line = record.read_text()
    assert line.startswith("NVIDIA_VISIBLE_DEVICES=all ")
    assert "--container-image=registry.example.com/tml-twhin:0.1.0" in line
    assert "/usr/src/app/entrypoint.sh" in line
