"""What a job must compute on, and a refusal to train on CPU where GPUs were expected.

`TML_DEVICE` names the device a job must use:

* `cuda`: the CUDA image sets it. A machine where torch sees no usable GPU is an error that says
  what is missing (NVIDIA driver and its version, the visible devices, the GPU's architecture
  against torch's and fbgemm-gpu's kernels), instead of the silent one-process CPU fallback
  that would train an 8-GPU node's job on one core for days.
* `cpu`: the CPU image sets it; on a GPU machine it opts in to CPU (the GPUs are hidden).
* `auto` or unset (a checkout): whatever the machine has, CUDA when a GPU is visible.

    python -m tml.core.device_check [--nproc]

checks and exits 2 with one `error:` line when the check fails (a bad environment is not
retried: a restart would meet the same machine); `--nproc` prints the default processes per
node (one per visible GPU, else 1). The entrypoint runs it before `train`; `run.py` runs the
same check before it imports anything that loads fbgemm-gpu (whose CUDA build cannot even load
without the driver), so a bare `torchrun .../run.py` in the CUDA image is refused the same way.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from tml.core.errors import EXIT_INPUT_ERROR

DEVICE_ENV = "TML_DEVICE"
DEVICES = ("auto", "cuda", "cpu")

# The oldest driver branch each CUDA major release runs on (NVIDIA's CUDA release notes, Linux;
# minor-version compatibility). PyPI's torch 2.13.0 and fbgemm-gpu 1.8.0 are CUDA 13.0 builds.
MIN_DRIVER_BRANCH = {13: 580, 12: 525}
# fbgemm-gpu has no runtime query for its kernels' architectures: these are the SASS targets in
# PyPI's fbgemm-gpu wheels (read from the 1.8.0 wheel's .so files, CUDA 13.0).
FBGEMM_GPU_ARCHS = {"1.8": ("sm_80", "sm_90a", "sm_100a")}
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
GPU_HINT = (
    "Give the container GPUs (docker run --gpus all; compose: the train service's device "
    "reservation; Kubernetes: nvidia.com/gpu limits; Slurm with pyxis: "
    "NVIDIA_VISIBLE_DEVICES=all), or set TML_DEVICE=cpu to train on CPU on purpose."
)


@dataclass
class GpuFacts:
    """What this machine and this torch build say about CUDA, gathered once."""

    torch_version: str
    torch_cuda: str | None  # torch.version.cuda: None for a CPU build
    driver: str | None  # the NVIDIA kernel module's version, None when none is loaded
    nvidia_visible_devices: str | None
    cuda_visible_devices: str | None
    device_nodes: list[str]
    gpus: list[tuple[str, str]]  # (name, "sm_XY") of each GPU torch sees
    torch_archs: list[str]
    fbgemm_version: str
    fbgemm_archs: tuple[str, ...] | None  # None: a version this module has no table for
    cuda_warnings: list[str] = field(default_factory=list)


def requested_device() -> str:
    """TML_DEVICE, checked: one of DEVICES (unset means auto)."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if value not in DEVICES:
        raise ValueError(f"{DEVICE_ENV}={value} is not one of {', '.join(DEVICES)}")
    return value


def driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """The loaded NVIDIA kernel module's version (e.g. 580.65.06), None without one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9]+(?:\.[0-9]+)+)", text)
    return found.group(1) if found else None


def gather_facts() -> GpuFacts:
    """Ask the driver, the environment, torch and fbgemm-gpu (initializes CUDA)."""
    with warnings.catch_warnings(record=True) as caught:  # e.g. "driver ... is too old"
        warnings.simplefilter("always")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = []
    for index in range(count):
        major, minor = torch.cuda.get_device_capability(index)
        gpus.append((torch.cuda.get_device_name(index), f"sm_{major}{minor}"))
    fbgemm_version = fbgemm_gpu_version()
    return GpuFacts(
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        driver=driver_version(),
        nvidia_visible_devices=os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        device_nodes=sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")),
        gpus=gpus,
        torch_archs=torch.cuda.get_arch_list() if torch.version.cuda else [],
        fbgemm_version=fbgemm_version,
        fbgemm_archs=FBGEMM_GPU_ARCHS.get(".".join(fbgemm_version.split(".")[:2])),
        cuda_warnings=[str(w.message).strip().splitlines()[0] for w in caught],
    )


def fbgemm_gpu_variant() -> str | None:
    """cuda, cpu (or rocm) as fbgemm-gpu's build says, read without loading its libraries."""
    spec = importlib.util.find_spec("fbgemm_gpu")
    if spec is None or not spec.submodule_search_locations:
        return None
    info = Path(spec.submodule_search_locations[0]) / "docs" / "target.default.json.py"
    try:
        return json.loads(info.read_text()).get("variant")
    except (OSError, ValueError):
        return None


def nvml_loads() -> bool:
    """Whether the NVIDIA driver's NVML, which fbgemm-gpu's CUDA build links, can be loaded."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def fbgemm_gpu_version() -> str:
    """The installed fbgemm-gpu distribution's version (CUDA or CPU build)."""
    for name in ("fbgemm-gpu", "fbgemm-gpu-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def runs_on(arch: str, capability: str) -> bool:
    """Whether kernels built for `arch` (sm_80, sm_90a, compute_90) run on a GPU `sm_XY`.

    SASS runs on its own major version at an equal or higher minor one; an arch-specific `a`
    build only on exactly its version; PTX (compute_XY) is compiled by the driver for XY or
    newer.
    """
    parsed = re.fullmatch(r"(sm|compute)_(\d+?)(\d)(a?)", arch)
    gpu = re.fullmatch(r"sm_(\d+?)(\d)", capability)
    if not parsed or not gpu:
        return False
    kind, major, minor, specific = parsed.groups()
    built, have = (int(major), int(minor)), (int(gpu.group(1)), int(gpu.group(2)))
    if kind == "compute":
        return have >= built
    if specific:
        return have == built
    return have[0] == built[0] and have[1] >= built[1]


def problems(facts: GpuFacts) -> list[str]:
    """Why this machine cannot run the CUDA image's job; empty when it can."""
    found = []
    if facts.torch_cuda is None:
        found.append(f"torch {facts.torch_version} is a CPU build (not the CUDA image's torch)")
    if not facts.gpus:
        found.append("torch sees no GPU (" + "; ".join(visibility(facts)) + ")")
    for index, (name, capability) in enumerate(facts.gpus):
        torch_ok = any(runs_on(arch, capability) for arch in facts.torch_archs)
        fbgemm_ok = facts.fbgemm_archs is None or any(
            runs_on(arch, capability) for arch in facts.fbgemm_archs
        )
        if not (torch_ok and fbgemm_ok):
            fbgemm = ", ".join(facts.fbgemm_archs or ())
            found.append(
                f"GPU {index} ({name}) is {capability}, which this build has no kernels for: "
                f"torch {facts.torch_version} has {', '.join(facts.torch_archs) or 'none'}, "
                f"fbgemm-gpu {facts.fbgemm_version} has {fbgemm}"
            )
    return found


def visibility(facts: GpuFacts) -> list[str]:
    """The facts that explain an empty GPU list: driver, visible devices, device nodes."""
    lines = []
    cuda_major = int(facts.torch_cuda.split(".")[0]) if facts.torch_cuda else None
    needed = MIN_DRIVER_BRANCH.get(cuda_major or 0)
    if facts.driver is None:
        lines.append(f"NVIDIA driver: none loaded ({DRIVER_VERSION_FILE} is missing)")
    elif needed and int(facts.driver.split(".")[0]) < needed:
        lines.append(
            f"NVIDIA driver: {facts.driver}, older than the R{needed} branch that CUDA "
            f"{facts.torch_cuda} needs: upgrade the host's driver"
        )
    else:
        lines.append(f"NVIDIA driver: {facts.driver}")
    for name, value in (
        ("NVIDIA_VISIBLE_DEVICES", facts.nvidia_visible_devices),
        ("CUDA_VISIBLE_DEVICES", facts.cuda_visible_devices),
    ):
        shown = "unset" if value is None else repr(value)
        if value is not None and value.strip() in ("", "none", "void", "-1"):
            shown += ", which hides every GPU"
        lines.append(f"{name}: {shown}")
    lines.append(f"/dev/nvidia*: {', '.join(facts.device_nodes) or 'none'}")
    lines += [f"torch: {message}" for message in facts.cuda_warnings]
    return lines


def require_expected_device() -> None:
    """Apply TML_DEVICE in this process; raise ValueError naming what is missing.

    `cpu` hides the GPUs from torch (before CUDA starts), so the process group and the tables
    are on CPU; `cuda` refuses a machine without a usable GPU.
    """
    device = requested_device()
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if fbgemm_gpu_variant() == "cuda" and not nvml_loads():
            raise ValueError(
                f"{DEVICE_ENV}=cpu, but this is the CUDA build: its fbgemm-gpu cannot load "
                "without the NVIDIA driver's libnvidia-ml.so.1, which this machine lacks. On a "
                "machine without an NVIDIA driver, use the CPU image (make image-cpu)."
            )
    elif device == "cuda":
        found = problems(gather_facts())
        if found:
            raise ValueError(refusal(found))


def refusal(found: list[str]) -> str:
    """The error for a CUDA-image job on a machine with these problems."""
    return (
        f"{DEVICE_ENV}=cuda (the CUDA image) but this machine cannot run it: "
        + "; ".join(found) + f". {GPU_HINT}"
    )  # fmt: skip


def exit_unless_expected_device() -> None:
    """require_expected_device(), or one `error:` line (from local rank 0) and exit 2."""
    try:
        require_expected_device()
    except ValueError as exc:
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INPUT_ERROR)


def default_nproc() -> int:
    """Processes per node when none is given: one per visible GPU, else 1."""
    return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that this machine has the job's device.")
    parser.add_argument("--nproc", action="store_true", help="print the default processes per node")
    args = parser.parse_args(argv)
    exit_unless_expected_device()
    if args.nproc:
        print(default_nproc())
    return 0


if __name__ == "__main__":
    sys.exit(main())
