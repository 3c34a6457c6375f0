#!/bin/sh
# The image build's import check (Dockerfile, stage import-check), run as root in a throwaway stage:
#
#   check-image-imports.sh cuda|cpu OUTPUT
#
# Imports torch, fbgemm_gpu and torchrec as the trainer will and checks the variant (CUDA 13
# torch and the CUDA fbgemm-gpu, or the CPU builds of both), so a wrong wheel fails the build,
# not the first job on the cluster; writes the versions it found to OUTPUT.
#
# fbgemm-gpu's CUDA build links the NVIDIA driver's NVML (libnvidia-ml.so.1), which the NVIDIA
# Container Toolkit mounts at run time only, so it cannot load on a build machine. The check
# loads it against a stub: every nvml* name in fbgemm-gpu's libraries as a function that fails,
# compiled here (gcc stays in this stage). The loading is real otherwise: a library built for
# another torch still fails on its undefined symbols.
set -eu

variant=$1
output=$2
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
names=$(find "$site/fbgemm_gpu" -name '*.so' -exec grep -aoh 'nvml[A-Za-z0-9_]*' {} + | sort -u)
if [ -n "$names" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
    mkdir -p /tmp/nvml-stub
    for name in $names; do echo "int $name(void) { return 999; }"; done >/tmp/nvml-stub/stub.c
    gcc -shared -fPIC -o /tmp/nvml-stub/libnvidia-ml.so.1 /tmp/nvml-stub/stub.c
    export LD_LIBRARY_PATH=/tmp/nvml-stub
fi
mkdir -p /tmp/check-cache
XDG_CACHE_HOME=/tmp/check-cache TMPDIR=/tmp/check-cache python - "$variant" "$output" <<'PYTHON'
import sys

import fbgemm_gpu
import torch
import torchrec

variant, output = sys.argv[1:]
cuda = torch.version.cuda or "none"
found = (
    f"torch {torch.__version__} (CUDA {cuda}), fbgemm-gpu {fbgemm_gpu.__version__} "
    f"({fbgemm_gpu.__variant__}), torchrec {torchrec.__version__}"
)
print(found)
expected_cuda = cuda.startswith("13.") if variant == "cuda" else cuda == "none"
if not expected_cuda or fbgemm_gpu.__variant__ != variant:
    sys.exit(f"error: the {variant} image installed {found}")
with open(output, "w") as out:
    out.write(found + "\n")
PYTHON
