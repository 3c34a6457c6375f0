#!/bin/sh
# Print the image's pins from requirements.txt, so the image and `make setup` cannot drift:
#
#   tools/image-requirements.sh cuda|cpu [requirements.txt]
#
# Both variants drop the test and lint tools (everything after that comment). `cuda` swaps
# fbgemm-gpu-cpu for fbgemm-gpu at the same version: torchrec's metadata leaves fbgemm-gpu open,
# so an unpinned install would pull a build for another torch. Runs in the Dockerfile with /bin/sh.
set -eu

variant=${1:?usage: $0 cuda|cpu [requirements.txt]}
requirements=${2:-requirements.txt}

grep -q '^# test and lint tools' "$requirements" || {
    echo "error: $requirements has no '# test and lint tools' line to cut at" >&2
    exit 1
}
runtime=$(sed '/^# test and lint tools/,$d' "$requirements" | grep -v '^[[:space:]]*\(#\|$\)')

case $variant in
    cuda) pins=$(printf '%s\n' "$runtime" | sed 's/^fbgemm-gpu-cpu==/fbgemm-gpu==/') ;;
    cpu) pins=$runtime ;;
    *)
        echo "error: variant must be cuda or cpu, not '$variant'" >&2
        exit 1
        ;;
esac

for package in torch fbgemm-gpu torchrec; do
    [ "$variant" = cpu ] && [ "$package" = fbgemm-gpu ] && package=fbgemm-gpu-cpu
    printf '%s\n' "$pins" | grep -q "^$package==" || {
        echo "error: $requirements pins no $package==" >&2
        exit 1
    }
done
printf '%s\n' "$pins"
