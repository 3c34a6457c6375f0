"""The image's run-time contract, run on this GPU-less host with the image's settings: the
CUDA image's refusal (entrypoint and bare torchrun), TML_DEVICE=cpu, the build's import check,
and the original TwHIN command from a checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, embeddings, torchrun_env
from tests.distributed.test_launch import VENV_BIN, run_entrypoint, short_run_config, write_text
from tests.distributed.test_training_run import read_metrics, read_metrics_split
from tests.unit.test_image import image_env
from tml.core.checkpoint import complete_checkpoints

# In `make test-tools` (CI runs it after `make test`), not `make test`: see docs/development.md.
pytestmark = pytest.mark.tools


def check_imports(variant: str, output: Path) -> subprocess.CompletedProcess[str]:
    """The build's import check, run on this checkout's venv (CPU packages)."""
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    script = REPO / "tools" / "check-image-imports.sh"
    return subprocess.run(
        ["sh", str(script), variant, str(output)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def test_import_check_passes_the_right_wheels_and_fails_a_wrong_one(tmp_path: Path) -> None:
    result = check_imports("cpu", tmp_path / "ok")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ok").read_text().startswith("torch 2.13.0+cpu (CUDA none), fbgemm-gpu")
    # CPU wheels where the CUDA image expects CUDA ones: the build stops.
    result = check_imports("cuda", tmp_path / "wrong")
    assert result.returncode != 0 and not (tmp_path / "wrong").exists()
    assert "error: the cuda image installed torch 2.13.0+cpu (CUDA none)" in result.stderr


def test_cuda_image_refuses_to_train_without_a_gpu(tmp_path: Path) -> None:
    config = write_text(tmp_path / "config.yaml", "{}\n")
    result = run_entrypoint(
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "s"), **image_env()
    )
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: TML_DEVICE=cuda (the CUDA image) but this machine cannot run")
    for fact in ("torch sees no GPU", "NVIDIA driver: none loaded", "NVIDIA_VISIBLE_DEVICES: unset",
                 "/dev/nvidia*: none", "docker run --gpus all", "set TML_DEVICE=cpu"):  # fmt: skip
        assert fact in error, fact
    assert "entrypoint:" not in result.stderr  # nothing was launched


def test_original_torchrun_line_is_refused_the_same_way(tmp_path: Path) -> None:
    """The image's env reaches run.py without the entrypoint too (a bare torchrun)."""
    env = dict(torchrun_env(), **image_env())
    result = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node", "1",
         str(REPO / "tml/projects/twhin/run.py"),
         f"--config_yaml_path={REPO / 'tml/projects/twhin/config/local.yaml'}",
         f"--save_dir={tmp_path / 'save'}"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "error: TML_DEVICE=cuda (the CUDA image) but this machine cannot run" in result.stderr
    assert not (tmp_path / "save").exists()


def test_tml_device_cpu_opts_in_to_cpu_training(small_graph: Path, tmp_path: Path) -> None:
    config = short_run_config(small_graph, tmp_path / "config.yaml", steps=4)
    result = run_entrypoint(
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "save"), TML_DEVICE="cpu"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in complete_checkpoints(tmp_path / "save" / "checkpoints")] == ["step_4"]


def test_bad_tml_device_is_an_input_error(tmp_path: Path) -> None:
    config = write_text(tmp_path / "config.yaml", "{}\n")
    result = run_entrypoint(CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path), TML_DEVICE="gpu")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: TML_DEVICE=gpu is not one of auto, cuda, cpu"


# --- the original command ----------------------------------------------------------------------

ORIGINAL_COMMAND = (
    "torchrun --standalone --nnodes 1 --nproc_per_node 2 /usr/src/app/tml/projects/twhin/run.py "
    "--config_yaml_path=/usr/src/app/tml/projects/twhin/config/local.yaml --save_dir=/some/save/dir"
)


def test_original_command_runs_from_a_checkout(small_graph: Path, tmp_path: Path) -> None:
    """The original project's line with `/usr/src/app/` dropped, run by plain torchrun from a
    directory laid out as the image's /usr/src/app: the checkout's tml/, and data/ holding the
    synthetic graph (in the image, the /data volume). The config is the original field set."""
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "tml").symlink_to(REPO / "tml")
    (app / "data" / "synthetic").symlink_to(small_graph)
    command = ORIGINAL_COMMAND.replace("/usr/src/app/", "").replace("/some/save/dir", "runs/x")
    env = dict(torchrun_env(), PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    env.pop("PYTHONPATH")  # run.py finds its package itself, as in the original
    result = subprocess.run(
        command.split(), capture_output=True, text=True, timeout=300, env=env, cwd=app
    )
    assert result.returncode == 0, result.stderr[-4000:]
    save_dir = app / "runs" / "x"
    steps = [r["step"] for r in read_metrics(save_dir) if "split" not in r]
    assert steps[-1] == 50  # 9,990 edges / (500 x 2 ranks) = 10 steps per epoch, 5 epochs
    assert read_metrics_split(save_dir, "validation")[-1]["edges"] == 10  # rows 9,990-9,999
    assert embeddings(save_dir, "user").shape == (424_241, 4)
    # The docs show the same line for the image.
    assert ORIGINAL_COMMAND in (REPO / "docs" / "deployment.md").read_text()
