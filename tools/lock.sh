#!/usr/bin/env bash
# Regenerate the image's hash-locked requirements (`make lock`):
#
#   tools/lock.sh [locks-dir]          writes locks/cuda.txt, locks/cpu.txt, locks/tensorboard.txt
#
# Each lock is every package one image variant installs, transitive dependencies included, pinned
# with the sha256 of its files, resolved by `uv pip compile` from that variant's direct pins
# (tools/image-requirements.sh, i.e. requirements.txt) for the image's Python 3.11 on linux
# x86_64 with glibc 2.36 (Debian bookworm). The Dockerfile installs a lock with
# `pip install --require-hashes --no-deps`: exactly these files, nothing resolved at build time.
#
# The CPU variant's torch (2.13.0+cpu) is on PyTorch's CPU wheel index, not on PyPI:
# TORCH_CPU_INDEX (default https://download.pytorch.org/whl/cpu) is searched for it, or
# TORCH_CPU_FIND_LINKS, a folder holding that wheel, where the index cannot be reached.
# fbgemm-gpu is left out of the CPU lock: torchrec asks for it, but the CPU build provides the
# same module as fbgemm-gpu-cpu.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
mkdir -p "${1:-locks}"
out=$(cd "${1:-locks}" && pwd)
uv=${UV:-uv}
[[ $uv == */* ]] && uv=$(realpath "$uv")
# The inputs live in a scratch folder, named relatively there, so the locks' `# via` comments
# stay the same from one run to the next.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

compile() { # variant, extra uv options...
    local variant=$1
    shift
    sh "$repo/tools/image-requirements.sh" "$variant" "$repo/requirements.txt" >"$work/$variant.in"
    (cd "$work" && "$uv" pip compile --quiet --generate-hashes --python-version 3.11 \
        --python-platform x86_64-manylinux_2_36 --index-url https://pypi.org/simple \
        --custom-compile-command "make lock" --output-file "$out/$variant.txt" \
        "$@" "$variant.in")
}

compile cuda
torch_pin=$(grep '^torch==' requirements.txt)
echo "$torch_pin+cpu" >"$work/cpu-overrides.txt"
echo fbgemm-gpu >"$work/cpu-excludes.txt"
if [[ -n ${TORCH_CPU_FIND_LINKS:-} ]]; then
    cpu_source=(--find-links "$TORCH_CPU_FIND_LINKS")
else
    cpu_source=(--extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
        --index-strategy unsafe-best-match)
fi
compile cpu "${cpu_source[@]}" --overrides cpu-overrides.txt --excludes cpu-excludes.txt
# TensorBoard's dependencies at the trainer's versions where they share one (numpy...).
compile tensorboard --constraints "$repo/requirements.txt"
echo "wrote $out/cuda.txt $out/cpu.txt $out/tensorboard.txt" >&2
