#!/bin/sh
# Print one image variant's direct pins, derived from requirements.txt so the image and
# `make setup` cannot drift (tools/lock.sh locks them, with every transitive dependency):
#
#   tools/image-requirements.sh cuda|cpu|tensorboard [requirements.txt]
#
# `cuda` swaps fbgemm-gpu-cpu for fbgemm-gpu at the same version: torchrec's metadata leaves
# fbgemm-gpu open, so an unpinned install would pull a build for another torch. `tensorboard` is
# the TensorBoard-only image: its one pin.
set -eu

variant=${1:?usage: $0 cuda|cpu|tensorboard [requirements.txt]}
requirements=${2:-requirements.txt}

runtime=$(grep -v '^[[:space:]]*\(#\|$\)' "$requirements")
case $variant in
    cuda) pins=$(printf '%s\n' "$runtime" | sed 's/^fbgemm-gpu-cpu==/fbgemm-gpu==/') ;;
    cpu) pins=$runtime ;;
    tensorboard) pins=$(printf '%s\n' "$runtime" | grep '^tensorboard==' || true) ;;
    *)
        echo "error: variant must be cuda, cpu or tensorboard, not '$variant'" >&2
        exit 1
        ;;
esac

case $variant in
    cuda) required="torch fbgemm-gpu torchrec" ;;
    cpu) required="torch fbgemm-gpu-cpu torchrec" ;;
    tensorboard) required="tensorboard" ;;
esac
for package in $required; do
    printf '%s\n' "$pins" | grep -q "^$package==" || {
        echo "error: $requirements pins no $package==" >&2
        exit 1
    }
done
printf '%s\n' "$pins"
