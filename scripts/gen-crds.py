#!/usr/bin/env python3
"""Generate the CustomResourceDefinitions in ``deploy/crds/`` from the pydantic models.

    python scripts/gen-crds.py            # (re)write deploy/crds/*.yaml
    python scripts/gen-crds.py --check    # exit 1 if a committed file is stale

``MirrorPolicy.spec`` comes from :class:`mirroring.policy.PolicySpec` and ``GlobalMount.spec``
from :class:`namespace.models.Mount`, through ``model_json_schema(by_alias=True)``, turned
into a Kubernetes *structural* OpenAPI v3 schema:

* ``$ref``/``$defs`` are inlined, ``title`` is dropped;
* ``anyOf: [X, {type: null}]`` (an ``Optional`` field) becomes ``X`` with ``nullable: true``;
* ``const`` becomes a one-value ``enum``; ``default: null`` is dropped;
* ``additionalProperties: false`` is dropped: Kubernetes refuses it next to ``properties``.
  A structural schema is closed anyway: the API server prunes unknown fields, and
  ``kubectl apply`` (``--validate=strict``, the default) refuses them;
* ``x-kubernetes-int-or-string`` (durations: seconds or text) is kept, and needs no ``type``.

Rules the models enforce in Python validators, invisible to JSON Schema, are added from the
table ``_EXTRA`` below (names are DNS-1123 labels, paths are absolute, a target has exactly
one of ``cluster``/``uri``). The meaning checks (unknown volume or cluster, interval only
with ``mode: interval``, ...) stay with the controller, which reports them in ``status``.

Output is deterministic (sorted keys, no timestamps), so ``tests/unit/test_deploy.py`` can
check that the committed files are current.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from mirroring.policy import API_VERSION, KIND, MirrorPolicy, PolicySpec  # noqa: E402
from namespace.models import Mount  # noqa: E402
from namespace.paths import _DNS1123_LABEL, MAX_PATH_BYTES  # noqa: E402

GROUP, VERSION = API_VERSION.split("/")
CRD_DIR = ROOT / "deploy" / "crds"

# A DNS-1123 label, exactly as namespace.paths.check_name checks it.
NAME = {"type": "string", "maxLength": 63, "pattern": f"^{_DNS1123_LABEL.pattern}$"}

# One path component that namespace.paths.normalize accepts: no '/', no control characters
# (U+0000-U+001F, U+007F-U+009F), not '.' or '..'. Written without look-arounds so Go's RE2
# (the API server) and Python's re (the tests) read it the same way, and so that it cannot
# backtrack exponentially (a component is always followed by '/' or the end).
_C = r"[^/\x00-\x1f\x7f-\x9f]"
_C1 = r"[^/.\x00-\x1f\x7f-\x9f]"
_COMPONENT = rf"(?:{_C1}{_C}*|\.{_C1}{_C}*|\.\.{_C}+)"
ABS_PATH = rf"^/+(?:{_COMPONENT}(?:/+|$))*$"
REL_PATH = rf"^/*(?:{_COMPONENT}(?:/+|$))*$"

# Extra constraints per field: path from the spec root (list items as "[]") -> keys to add.
_EXTRA: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {
    "MirrorPolicy": {
        ("volume",): NAME,
        ("targets",): {"minItems": 1},
        ("targets", "[]", "cluster"): NAME,
        ("targets", "[]", "uri"): {"minLength": 1},
        ("targets", "[]"): {
            # exactly one of cluster / uri (Target._one_of)
            "oneOf": [{"required": ["cluster"]}, {"required": ["uri"]}],
        },
        ("failover", "promoteTo"): NAME,
    },
    "GlobalMount": {
        ("path",): {"pattern": ABS_PATH, "maxLength": MAX_PATH_BYTES},
        ("volume",): NAME,
        ("subpath",): {"pattern": REL_PATH, "maxLength": MAX_PATH_BYTES},
    },
}


# -- JSON Schema (pydantic) -> structural OpenAPI v3 ---------------------------------------


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r}")
    target: dict[str, Any] = copy.deepcopy(defs[ref[len(prefix):]])
    # siblings of $ref (pydantic puts description/default there) win over the definition
    target.update({k: v for k, v in node.items() if k != "$ref"})
    return target


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes structural schema equivalent to the JSON Schema ``node``."""
    node = _deref(node, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        rest = [s for s in any_of if s != {"type": "null"}]
        if len(rest) != 1:
            raise ValueError(f"cannot express anyOf {any_of!r} in a structural schema")
        inner = structural(rest[0], defs)
        out.update(inner)
        if len(rest) != len(any_of):
            out["nullable"] = True
    for key, value in node.items():
        if key in ("anyOf", "$ref", "$defs", "title"):
            continue
        if key == "additionalProperties":
            if value is False:
                continue  # closed by pruning; not allowed next to properties
            out[key] = value if value is True else structural(value, defs)
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None:
                out[key] = value
        elif key == "description":
            out[key] = " ".join(value.replace("``", "'").split())
        elif key in ("type", "enum", "pattern", "required", "minItems", "maxItems",
                     "minLength", "maxLength", "minimum", "maximum", "format",
                     "x-kubernetes-int-or-string"):
            out[key] = value
        else:
            raise ValueError(f"no structural equivalent for JSON Schema keyword {key!r}")
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"schema without a type: {node!r}")
    return out


def _apply_extra(schema: dict[str, Any], extra: dict[tuple[str, ...], dict[str, Any]]) -> None:
    for path, keys in extra.items():
        node = schema
        for part in path:
            node = node["items"] if part == "[]" else node["properties"][part]
        for k, v in keys.items():
            if k in node and node[k] != v:
                raise ValueError(f"{'.'.join(path)}: model already sets {k}={node[k]!r}")
            node[k] = copy.deepcopy(v)


def model_spec_schema(model: type[BaseModel], kind: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    schema = structural(raw, raw.get("$defs", {}))
    _apply_extra(schema, _EXTRA[kind])
    return schema


# -- the CRDs -------------------------------------------------------------------------------

_PRESERVED_STATUS = {
    "type": "object",
    "description": "Written by the gns controller (--kubernetes); its shape is the "
    "controller's to evolve, so unknown fields are kept.",
    "x-kubernetes-preserve-unknown-fields": True,
}


def _crd(kind: str, plural: str, short: list[str], spec: dict[str, Any],
         metadata: dict[str, Any], columns: list[dict[str, Any]], description: str) -> dict[str, Any]:
    root = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata,
            "spec": spec,
            "status": copy.deepcopy(_PRESERVED_STATUS),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "gns", "app.kubernetes.io/part-of": "gns"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["gns"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns + [
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def mirrorpolicy_crd() -> dict[str, Any]:
    top = set(MirrorPolicy.model_json_schema(by_alias=True)["properties"])
    if top != {"apiVersion", "kind", "metadata", "spec"}:
        raise ValueError(f"MirrorPolicy has new top-level fields {sorted(top)}: update gen-crds.py")
    assert KIND == "MirrorPolicy"
    return _crd(
        KIND, "mirrorpolicies", ["mp", "mirrorpolicy"],
        model_spec_schema(PolicySpec, "MirrorPolicy"),
        # the policy's name is metadata.name: a DNS-1123 label (check_name("policy", ...))
        {"type": "object", "properties": {"name": copy.deepcopy(NAME)}},
        [
            {"name": "Volume", "type": "string", "jsonPath": ".spec.volume"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Targets", "type": "string", "jsonPath": ".spec.targets",
             "description": "Where the volume is mirrored (clusters and object-store URIs)."},
        ],
        "A gns mirror policy (SPEC section 6): the same document 'gns mirror apply -f' takes.",
    )


def globalmount_crd() -> dict[str, Any]:
    return _crd(
        "GlobalMount", "globalmounts", ["gm", "gmount"],
        model_spec_schema(Mount, "GlobalMount"),
        {"type": "object"},
        [
            {"name": "Path", "type": "string", "jsonPath": ".spec.path"},
            {"name": "Volume", "type": "string", "jsonPath": ".spec.volume"},
            {"name": "Subpath", "type": "string", "jsonPath": ".spec.subpath"},
        ],
        "A mount in the gns global namespace: global path prefix -> volume[:subpath] "
        "(what 'gns mount add PATH VOLUME[:SUBPATH]' creates).",
    )


HEADER = "# GENERATED by scripts/gen-crds.py from the pydantic models: do not edit by hand.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=True, allow_unicode=True, width=100,
                                   default_flow_style=False)


def generate() -> dict[Path, str]:
    """File path -> content, for every generated file."""
    out: dict[Path, str] = {}
    for crd in (mirrorpolicy_crd(), globalmount_crd()):
        out[CRD_DIR / f"{crd['metadata']['name']}.yaml"] = render(crd)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = ap.parse_args(argv)
    stale = []
    for path, text in generate().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python scripts/gen-crds.py)",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
