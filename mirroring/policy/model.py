"""The mirror policy document (SPEC §6) as pydantic models: camelCase on the wire, nothing
unknown, strict types; and the stored policies of a namespace view, parsed once per change."""
from __future__ import annotations

import json
import logging
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from cloud_adapters.uri import StoreURI, parse_uri
from mirroring.policy.duration import Duration
from namespace.cache import NamespaceView
from namespace.paths import check_name

API_VERSION: Final = "gns.io/v1alpha1"
KIND: Final = "MirrorPolicy"
Mode = Literal["continuous", "interval", "manual", "sync"]
MODES: tuple[str, ...] = ("continuous", "interval", "manual", "sync")
ONE_OF_CLUSTER_OR_URI: Final = "a target needs exactly one of 'cluster' or 'uri'"

log = logging.getLogger(__name__)

# -- the document -----------------------------------------------------------------------------


class _Doc(BaseModel):
    """Base of every part of the document: camelCase on the wire, nothing unknown, strict types."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


class Target(_Doc):
    """One place a volume is mirrored to: exactly one of ``cluster`` or ``uri``."""

    cluster: str | None = None
    """A cluster whose controller holds a replica volume (pushed over gRPC)."""
    uri: str | None = None
    """An object-store or file location: ``s3://``, ``gs://``, ``az://`` or ``file://``."""

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str | None) -> str | None:
        return None if v is None else check_name("cluster", v)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is None:
            return None
        store = parse_uri(v)  # InvalidURI is a ValueError: pydantic reports it at this field
        if store.scheme == "file" and store.prefix == "/":
            raise ValueError(f"{v}: refusing to mirror into the filesystem root")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.cluster is None) == (self.uri is None):
            raise ValueError(ONE_OF_CLUSTER_OR_URI)
        return self

    @property
    def name(self) -> str:
        """How status, priority and users name this target: the cluster id, or the URI as
        written without trailing '/'."""
        return self.cluster if self.cluster is not None else uri_target_name(self.uri or "")

    @property
    def is_cluster(self) -> bool:
        return self.cluster is not None

    @property
    def store(self) -> StoreURI:
        """The parsed URI of an object-store target (ValueError for a cluster target)."""
        if self.uri is None:
            raise ValueError(f"target {self.name} is a cluster, not a store")
        return parse_uri(self.uri)


class Failover(_Doc):
    """How the volume fails over when its owner is Down (SPEC §7)."""

    automatic: bool = False
    """Promote a target automatically once the owner has been Down for ``after``."""
    after: Duration = Duration("30s")
    """How long the owner must be Down before automatic promotion (more than 0; a plain
    number is seconds)."""
    priority: list[str] = Field(default_factory=list)
    """Target names breaking ties between equally current candidates, first wins."""
    promote_to: str | None = None
    """The cluster that takes the volume over when an object-store target is chosen."""

    @field_validator("promote_to")
    @classmethod
    def _promote_to(cls, v: str | None) -> str | None:
        return None if v is None else check_name("cluster", v)


class PolicySpec(_Doc):
    """What is mirrored where, how often, and how failover works."""

    volume: str
    """The volume to mirror."""
    mode: Mode = "continuous"
    """``continuous`` (each change within about a second), ``interval`` (on a timer),
    ``manual`` (on ``gns mirror sync``) or ``sync`` (writes wait for every target)."""
    interval: Duration | None = None
    """The timer for ``mode: interval`` (more than 0; a plain number is seconds; accepted
    and unused with other modes)."""
    targets: list[Target]
    """Where the volume is mirrored, in the order status lists them."""
    failover: Failover = Field(default_factory=Failover)
    """Failover settings (automatic promotion off by default)."""
    max_lag: Duration = Duration("60s")
    """A target further behind than this is reported ``Lagging`` (a plain number is
    seconds)."""

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: str) -> str:
        return check_name("volume", v)


class Metadata(_Doc):
    """Kubernetes-style object metadata; ``name`` names the policy."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("policy", v)


# Metadata the Kubernetes API server fills in; dropped by MirrorPolicy.from_kubernetes.
_SERVER_METADATA = frozenset({
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink", "finalizers",
    "ownerReferences", "generateName",
})


class MirrorPolicy(_Doc):
    """A mirror policy document (SPEC §6), shared by the CLI, etcd and Kubernetes.

    ``apiVersion`` and ``kind`` may be left out together (a bare ``metadata`` + ``spec``
    document); a document that gives one must give both, as Kubernetes requires
    (:func:`~mirroring.policy.validation.check_structure` reports the one missing)."""

    api_version: Literal["gns.io/v1alpha1"] = API_VERSION
    kind: Literal["MirrorPolicy"] = KIND
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.spec.targets]

    def target(self, name: str) -> Target:
        """The target called ``name`` (KeyError if none)."""
        for t in self.spec.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The document as plain JSON data (camelCase, unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> bytes:
        """What is stored at ``/gns/v1/policies/<name>`` (compact, stable key order)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_stored(cls, data: bytes | str | dict[str, Any]) -> MirrorPolicy:
        """Decode a stored policy (raw bytes, or the dict ``NamespaceView`` keeps)."""
        if isinstance(data, dict):
            return cls.model_validate(data)
        return cls.model_validate_json(data)

    @classmethod
    def from_kubernetes(cls, obj: dict[str, Any]) -> dict[str, Any]:
        """The document part of a custom-resource object as the API server returns it:
        ``status`` and server-filled metadata dropped. Validate the result with
        :func:`validate_document`."""
        doc = {k: v for k, v in obj.items() if k != "status"}
        meta = doc.get("metadata")
        if isinstance(meta, dict):
            doc["metadata"] = {k: v for k, v in meta.items() if k not in _SERVER_METADATA}
        return doc


# name -> (the stored dict it was parsed from, the policy): NamespaceView replaces a
# policy's dict whenever etcd changes it, so identity tells whether the parse is current.
_parsed: dict[str, tuple[dict[str, Any], MirrorPolicy]] = {}


def stored_policy(view: NamespaceView, name: str) -> MirrorPolicy | None:
    """Policy ``name`` as stored (None if absent or malformed), parsed once per change:
    the scheduler, failover and status read every policy many times a second."""
    raw = view.policies.get(name)
    if raw is None:
        return None
    hit = _parsed.get(name)
    if hit is not None and hit[0] is raw:
        return hit[1]
    try:
        policy = MirrorPolicy.from_stored(raw)
    except ValidationError as exc:
        log.warning("mirror policy %s: stored document is malformed, skipped: %s", name, exc)
        return None
    _parsed[name] = (raw, policy)
    return policy


def stored_policies(view: NamespaceView) -> list[MirrorPolicy]:
    """Every well-formed stored policy, by name."""
    return [p for name in sorted(view.policies) if (p := stored_policy(view, name)) is not None]


def uri_target_name(uri: str) -> str:
    """A URI target's name: the URI as written, without trailing slashes."""
    stripped = uri.strip().rstrip("/")
    return stripped or uri


