#!/usr/bin/env bash
# Container entrypoint of tml-twhin; runs on a host checkout too (TML_APP_DIR=. PATH=.venv/bin:$PATH).
#
#   entrypoint.sh [JOB] [ARGS...]     (no argument, or a leading flag: train)
#
# train      torchrun (as tml.core.launch) tml/projects/twhin/run.py on this node's GPUs (or 1 CPU
#            process); SIGTERM (SIGINT) makes it checkpoint at the next step and exit 143 (130)
# evaluate   python -m tml.projects.twhin.evaluate on the config and save dir
# export     python -m tml.projects.twhin.export --save_dir (newest checkpoint -> parquet)
# neighbors  python -m tml.projects.twhin.neighbors --save_dir (ARGS: --table T --query Q ...)
# report     python -m tml.projects.twhin.report --save_dir (plots + index.html in SAVE_DIR/report)
# import_kg  python -m tml.projects.twhin.import_kg ARGS (--train FILE --out /data/NAME ...)
# tune       python -m tml.projects.twhin.tune on the config and save dir, where the image has it
# COMMAND    anything else runs as is (python, tensorboard, bash, ...)
# ARGS are appended to the job's command line. Every job gets the same environment.
#
# Environment (the names the compose file, deploy/k8s and deploy/slurm set). Kubeflow's PET_*
# variables (PyTorchJob and Trainer v2 set them) are the defaults of the launch settings, so
# manifests need not repeat them:
#   CONFIG_YAML_PATH  config file (default /config/config.yaml: mount your configs at /config)
#   SAVE_DIR          checkpoints, metrics, embeddings (default /save: mount a writable volume)
#   NPROC_PER_NODE    processes on this node (default PET_NPROC_PER_NODE, where `auto` or unset
#                     means one per visible GPU, or 1 without GPUs)
#   NNODES            nodes in the job (default PET_NNODES, else 1: a standalone rendezvous)
#   RDZV_ENDPOINT     host:port of the c10d rendezvous when NNODES > 1, on the first node
#                     (default MASTER_ADDR:MASTER_PORT, else PET_MASTER_ADDR:PET_MASTER_PORT)
#   NODE_RANK         0 on the node that hosts the rendezvous store (default PET_NODE_RANK);
#                     unset: found from hostnames
#   RDZV_ID           job id shared by all nodes (default tml-twhin)
#   MAX_RESTARTS      torchrun restarts of the worker group after a crash (default 3); each
#                     restart resumes from the newest checkpoint; bad inputs are not retried
#   GRACE_PERIOD_S    seconds between SIGTERM and killing workers that have not checkpointed
#                     and stopped yet (default 30; keep the scheduler's grace period longer)
#   TML_DEVICE        cuda (the CUDA image: no usable GPU is an error, exit 2), cpu (the CPU
#                     image, or CPU on purpose: GPUs hidden), auto (a checkout: what there is)
#   TML_APP_DIR       the tml-twhin checkout (default /usr/src/app, where the image has it)
#
# Exit codes, the launcher's (docs/fault-tolerance.md): 0 finished, 1 failed (restarts used up),
# 2 bad input (never retried), 143/130 stopped by SIGTERM/SIGINT after a checkpoint (resume it).
set -euo pipefail

# Stopped before the launcher started: nothing to checkpoint yet, but still "stopped on request".
# (exec below replaces these traps with the launcher's handlers.)
trap 'exit 143' TERM
trap 'exit 130' INT

# Same code for input errors as run.py: one `error:` line, exit 2.
die() {
    echo "error: $*" >&2
    exit 2
}

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

app_dir=${TML_APP_DIR:-/usr/src/app}
config=${CONFIG_YAML_PATH:-/config/config.yaml}
save_dir=${SAVE_DIR:-/save}
# Spinning OpenMP threads made small CPU boxes 10-40x slower; torch reads this when it loads.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONPATH="$app_dir${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

job=train
if [[ $# -gt 0 && $1 != -* ]]; then # a leading flag means "train with these extra flags"
    job=$1
    shift
fi

require_config() {
    [[ -f $config && -r $config ]] || die "config file $config not found or not readable." \
        "Mount the directory holding it (docker run -v \"\$PWD/configs:/config:ro\" ...)" \
        "and set CONFIG_YAML_PATH=/config/<name>.yaml (default /config/config.yaml)."
}

# A real write, not `test -w`: root passes -w on anything but a read-only file system, and the
# trainer should fail here with a hint rather than at its first checkpoint.
require_writable_save_dir() {
    local reason probe
    local hint="Mount a writable directory there (docker run -v \"\$PWD/runs:/save\" ...) or set"
    hint+=" SAVE_DIR; a bind mount must be writable by uid $(id -u) (compose: TML_UID/TML_GID)."
    if ! reason=$(mkdir -p -- "$save_dir" 2>&1); then
        die "save dir $save_dir cannot be created (${reason##*: }). $hint"
    fi
    if ! probe=$(mktemp -p "$save_dir" .write-test.XXXXXX 2>&1); then
        die "save dir $save_dir is not writable (${probe##*: }). $hint"
    fi
    rm -f -- "$probe"
}

# TML_DEVICE's check (the CUDA image refuses a machine without a usable GPU, naming what is
# missing) and the default process count: one per visible GPU, as run.py maps local ranks to
# GPUs; torch's count honours CUDA_VISIBLE_DEVICES and the devices the container runtime exposed.
# TML_DEVICE=cpu hides the GPUs from every process started below.
check_device() {
    local out
    out=$(python -m tml.core.device_check --nproc) || exit $?
    default_nproc=$out
    if [[ ${TML_DEVICE:-} == cpu ]]; then export CUDA_VISIBLE_DEVICES=""; fi
}

torchrun_launch_args() {
    local nproc=${NPROC_PER_NODE:-${PET_NPROC_PER_NODE:-}} nnodes=${NNODES:-${PET_NNODES:-1}}
    local endpoint
    [[ $nnodes != *:* ]] || die "NNODES=$nnodes is an elastic range (a PyTorchJob" \
        "elasticPolicy): set a fixed number of nodes"
    is_count "$nnodes" || die "NNODES=$nnodes is not a positive integer"
    check_device
    [[ -n $nproc && $nproc != auto ]] || nproc=$default_nproc
    is_count "$nproc" || die "NPROC_PER_NODE=$nproc is not a positive integer"
    is_count "${GRACE_PERIOD_S:-30}" || die "GRACE_PERIOD_S=$GRACE_PERIOD_S is not a positive integer"
    launch=(--nnodes "$nnodes" --nproc_per_node "$nproc" --max_restarts "${MAX_RESTARTS:-3}")
    if [[ $nnodes == 1 ]]; then
        launch+=(--standalone)
        return
    fi
    endpoint=${RDZV_ENDPOINT:-}
    if [[ -z $endpoint && -n ${MASTER_ADDR:-} ]]; then
        endpoint=$MASTER_ADDR:${MASTER_PORT:-29400}
    elif [[ -z $endpoint && -n ${PET_MASTER_ADDR:-} ]]; then # Trainer v2 sets only these
        endpoint=$PET_MASTER_ADDR:${PET_MASTER_PORT:-29400}
    fi
    [[ -n $endpoint ]] || die "NNODES=$nnodes needs the first node's address: set" \
        "RDZV_ENDPOINT=host:port (or MASTER_ADDR and MASTER_PORT, or Kubeflow's PET_MASTER_ADDR" \
        "and PET_MASTER_PORT) on every node."
    launch+=(--rdzv_backend c10d --rdzv_endpoint "$endpoint" --rdzv_id "${RDZV_ID:-tml-twhin}")
    local node_rank=${NODE_RANK:-${PET_NODE_RANK:-}}
    if [[ -n $node_rank ]]; then
        # c10d hands out ranks as nodes join (torchrun ignores --node_rank with it); NODE_RANK
        # picks the node serving the rendezvous store, which hostname matching gets wrong behind
        # a Kubernetes service name or with several "nodes" on one machine.
        if [[ $node_rank == 0 ]]; then
            launch+=(--rdzv_conf is_host=1)
        else
            launch+=(--rdzv_conf is_host=0)
        fi
    fi
}

# The run's outputs as input (neighbors): the save dir must exist, it need not be writable.
require_save_dir() {
    [[ -d $save_dir ]] || die "save dir $save_dir not found: mount the run's directory" \
        "(docker run -v \"\$PWD/runs:/save\" ...) and set SAVE_DIR to it."
}

# Optional commands (tune) exist in some builds only; a missing one should say so, by name.
require_module() {
    python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' \
        "$1" 2>/dev/null || die "job $job needs $1, which this build of tml-twhin does not have"
}

case $job in
    train)
        run_py=$app_dir/tml/projects/twhin/run.py
        [[ -f $run_py ]] || die "$run_py not found: set TML_APP_DIR to a tml-twhin checkout"
        command -v python >/dev/null || die "python is not on PATH (activate the venv)"
        require_config
        require_writable_save_dir
        torchrun_launch_args
        # exec below: SIGTERM from the scheduler reaches the launcher, which forwards it.
        set -- python -m tml.core.launch "${launch[@]}" "$run_py" \
            --config_yaml_path="$config" --save_dir="$save_dir" "$@"
        ;;
    evaluate)
        require_config
        require_writable_save_dir
        set -- python -m tml.projects.twhin.evaluate \
            --config_yaml_path="$config" --save_dir="$save_dir" "$@"
        ;;
    export | report)
        require_writable_save_dir
        set -- python -m "tml.projects.twhin.$job" --save_dir "$save_dir" "$@"
        ;;
    neighbors)
        require_save_dir
        set -- python -m tml.projects.twhin.neighbors --save_dir "$save_dir" "$@"
        ;;
    import_kg)
        set -- python -m tml.projects.twhin.import_kg "$@"
        ;;
    tune)
        require_module tml.projects.twhin.tune
        require_config
        require_writable_save_dir
        check_device
        set -- python -m tml.projects.twhin.tune \
            --config_yaml_path="$config" --save_dir="$save_dir" "$@"
        ;;
    *)
        set -- "$job" "$@"
        ;;
esac
echo "entrypoint: $*" >&2
exec "$@"
