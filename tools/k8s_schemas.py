"""Validate Kubernetes manifests against vendored Kubeflow CRD schemas, strictly, with no cluster.

    python tools/k8s_schemas.py check deploy/k8s/*.yaml          (make lint)
    python tools/k8s_schemas.py extract CRD.yaml... [--out deploy/k8s/schemas]   (make k8s-schemas)

`extract` turns each CustomResourceDefinition's `openAPIV3Schema` into a JSON schema file,
`<group>_<version>_<kind>.json`, made strict the way the API server's structural pruning is
not: every object that lists its properties rejects any other (`additionalProperties: false`),
so a misspelt or misplaced field (`restartPolicy` one level too deep) fails here instead of
being silently dropped by the cluster. Descriptions are dropped to keep the files small;
`nullable` becomes a JSON-schema null type.

`check` validates every document of the given files whose apiVersion and kind have a vendored
schema, prints each error with its path, and exits 1 on any. Documents of other kinds (core
PersistentVolumeClaims, ConfigMaps...) are listed as not checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "schemas"
# Where the vendored CRDs come from (make k8s-schemas downloads them).
SOURCES = {
    "kubeflow.org_pytorchjobs.yaml": "kubeflow/training-operator v1.9.0",
    "trainer.kubeflow.org_trainjobs.yaml": "kubeflow/trainer v2.3.0",
    "trainer.kubeflow.org_trainingruntimes.yaml": "kubeflow/trainer v2.3.0",
}
DROPPED_KEYS = {"description", "x-kubernetes-validations", "example"}


def strict(node: Any) -> Any:
    """A copy of an OpenAPI v3 schema as strict JSON schema (see the module docstring)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key not in DROPPED_KEYS}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_object = out.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in out
    if "properties" in out and not open_object:
        out["additionalProperties"] = False
    return out


def extract(crd_paths: list[Path], out_dir: Path) -> list[Path]:
    """Write one strict schema per served version of each CRD; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in crd_paths:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$comment"] = (
                    f"{kind} {group}/{version['name']}: the openAPIV3Schema of {path.name} "
                    f"({SOURCES.get(path.name, 'source unknown')}), made strict by "
                    "tools/k8s_schemas.py"
                )
                target = out_dir / f"{group}_{version['name']}_{kind}.json"
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                written.append(target)
    return written


def schema_for(document: dict[str, Any], schema_dir: Path) -> Path | None:
    api_version = str(document.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    path = schema_dir / f"{group or 'core'}_{version}_{document.get('kind')}.json"
    return path if path.is_file() else None


def check(paths: list[Path], schema_dir: Path = SCHEMA_DIR) -> int:
    """Validate every document with a vendored schema; print errors; return their count."""
    errors = 0
    for path in paths:
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if not document:
                continue
            name = f"{path} document {index} ({document.get('kind')} "
            name += f"{document.get('metadata', {}).get('name')})"
            schema_path = schema_for(document, schema_dir)
            if schema_path is None:
                print(f"{name}: not checked (no vendored schema for {document.get('apiVersion')})")
                continue
            validator = Draft202012Validator(json.loads(schema_path.read_text()))
            found = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
            for error in found:
                where = ".".join(str(part) for part in error.absolute_path) or "(top)"
                print(f"error: {name}: {where}: {error.message}", file=sys.stderr)
            errors += len(found)
            if not found:
                print(f"{name}: valid against {schema_path.name}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="validate manifests")
    check_cmd.add_argument("manifests", nargs="+", type=Path)
    check_cmd.add_argument("--schemas", type=Path, default=SCHEMA_DIR)
    extract_cmd = commands.add_parser("extract", help="vendor strict schemas from CRD files")
    extract_cmd.add_argument("crds", nargs="+", type=Path)
    extract_cmd.add_argument("--out", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    if args.command == "extract":
        for path in extract(args.crds, args.out):
            print(f"wrote {path}")
        return 0
    return 1 if check(args.manifests, args.schemas) else 0


if __name__ == "__main__":
    sys.exit(main())
