"""Every StorageClass under deploy/examples provisions: its parameters, through
federation.csi.params, make a mirror policy that ``gns mirror apply`` accepts. No servers."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.csi.params import plan
from mirroring.policy import validate_document
from namespace.cache import NamespaceView
from namespace.models import ClusterSpec, Volume

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
PVC = {"csi.storage.k8s.io/pvc/namespace": "apps", "csi.storage.k8s.io/pvc/name": "db"}
# the default federation of `gns up` (SPEC §4): the clusters the examples name
CLUSTERS = ("onprem-a", "onprem-b", "aws-1")


def _storage_classes() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for f in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "StorageClass":
                assert doc["provisioner"] == "csi.gns.io", f.name
                found.append((f.name, doc))
    return found


STORAGE_CLASSES = _storage_classes()


def test_examples_are_found() -> None:
    assert len(STORAGE_CLASSES) >= 4


@pytest.mark.parametrize(("owner", "sc"), [
    (owner, sc) for _, sc in STORAGE_CLASSES for owner in ("onprem-a", "aws-1")
], ids=[f"{name}-{owner}" for name, _ in STORAGE_CLASSES for owner in ("onprem-a", "aws-1")])
def test_example_storage_class_provisions(owner: str, sc: dict[str, Any]) -> None:
    """``owner``: the node's cluster (topology) when the class names none."""
    # kubelet hands every value over as a string
    parameters = {k: str(v) for k, v in (sc.get("parameters") or {}).items()}
    p = plan("pvc-0b7c2d9e-1111-4c1e-9d7a-2f1c3b4a5d6e", {**PVC, **parameters}, owner)
    if p.policy is None:
        return
    view = NamespaceView(clusters={c: ClusterSpec(id=c) for c in CLUSTERS})
    view = replace(view, volumes={p.volume: Volume(name=p.volume, owner=p.cluster)})
    validate_document(p.policy, view)  # raises InvalidInput listing what mirror apply refuses
