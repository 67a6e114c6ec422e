"""Control-plane records as stored in etcd (JSON) and shown by ``--json`` (SPEC §4).

Pydantic models validate on the way in from users and from etcd alike, so a malformed key
written by an older or buggy controller is caught where it is read.
"""
from __future__ import annotations

import re
from typing import Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from namespace.errors import InvalidInput
from namespace.paths import check_name, normalize, normalize_relative

Provider = Literal["onprem", "aws", "gcp", "azure", "edge"]
PROVIDERS: tuple[str, ...] = ("onprem", "aws", "gcp", "azure", "edge")


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


HUB_LABEL = "gns.io/hub"
"""An edge site's registry record: provider ``edge`` and this label naming its hub, both
written by the hub (``edge_hub``), never by the site. A controller run with ``--provider
edge`` (SPEC §4) carries no such label: it holds etcd credentials and is a controller."""


class ClusterSpec(Record):
    """What a controller registers about its cluster."""

    id: str
    provider: Provider = "onprem"
    region: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    endpoint: str = ""
    metrics_endpoint: str = ""
    tunnel: str = ""
    """HOST:PORT of its bulk tunnel (``federation.controller.tunnel``); empty if it has none."""
    lease_ttl: int = 10
    tls: bool = False
    """Its gRPC port takes mutual TLS only (``--tls-dir``): a client needs certificates."""
    """Seconds its controller's liveness lease lasts without renewal."""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_name("cluster", v)

    @property
    def linked_site(self) -> bool:
        """An edge site a hub links (its identity is checked on grants, never trusted as a
        controller's), as opposed to a cluster running a controller of the federation."""
        return self.provider == "edge" and HUB_LABEL in self.labels


class ClusterView(ClusterSpec):
    """A cluster as users see it: its spec plus liveness."""

    state: Literal["Ready", "Down"] = "Down"


_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
MAX_LABELS = 64
MAX_LABEL_VALUE = 1024


def check_labels(labels: object) -> dict[str, str]:
    """Validate a volume's labels. Keys are Kubernetes label keys (``[prefix/]name``: a
    DNS subdomain of at most 253 characters, a name of at most 63), so tools that write
    them (the CSI driver's ``csi.gns.io/...``) cannot collide with users'; values are
    printable text up to 1,024 characters (a global path must fit, which a Kubernetes
    label value could not hold)."""
    if not isinstance(labels, dict):
        raise InvalidInput("labels must be a map of key to value")
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not _label_key_ok(key):
            problems.append(f"invalid label key {key!r}: expected [prefix/]name, a name of "
                            "1-63 letters, digits, '-', '_' or '.' starting and ending with a "
                            "letter or digit, a prefix a lowercase DNS subdomain")
        elif not isinstance(value, str):
            problems.append(f"label {key}: the value must be a string")
        elif len(value) > MAX_LABEL_VALUE or not value.isprintable():
            problems.append(f"label {key}: the value must be printable text of at most "
                            f"{MAX_LABEL_VALUE} characters")
    if problems:
        raise InvalidInput("; ".join(problems))
    return cast(dict[str, str], labels)


def _label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _LABEL_PREFIX.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


class Volume(Record):
    """A volume's ownership record. ``epoch`` fences writers from older owners."""

    name: str
    owner: str
    epoch: int = 1
    created: float = 0.0
    # Version the current owner started from when it was promoted (0 for a new volume):
    # writes a former owner made after this version never reached the new owner.
    base_version: int = 0
    # Former owners that must become mirror targets of the current owner (failback).
    former_owners: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    """Set once, at creation (``gns volume create --label``); they follow the record
    through promotions. The CSI driver marks the volumes it provisions here."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("volume", v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class VolumeState(Record):
    """What the owner publishes about a volume, batched (never one etcd write per file)."""

    version: int = 0
    epoch: int = 1
    updated: float = 0.0
    files: int = 0
    bytes: int = 0


class VolumeView(BaseModel):
    name: str
    owner: str
    epoch: int
    version: int
    state: Literal["Ready", "Down"]
    labels: dict[str, str] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _labels_if_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """``labels`` only where a volume has some: the JSON of every other volume keeps
        the five fields SPEC §4 lists."""
        data: dict[str, object] = handler(self)
        if not data.get("labels"):
            data.pop("labels", None)
        return data


class Mount(Record):
    """A global path prefix mapped to ``volume[:subpath]``."""

    path: str
    volume: str
    subpath: str = ""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return normalize(v)

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: str) -> str:
        return check_name("volume", v)

    @field_validator("subpath")
    @classmethod
    def _subpath(cls, v: str) -> str:
        return normalize_relative(v)


def parse_mount_target(target: str) -> tuple[str, str]:
    """Split ``VOLUME[:SUBPATH]`` into its validated parts."""
    volume, _, subpath = target.partition(":")
    return check_name("volume", volume), normalize_relative(subpath)
