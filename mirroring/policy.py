"""Mirror policies (SPEC §6): the one document model, parsing, and validation.

:class:`MirrorPolicy` is the document users give to ``gns mirror apply -f`` and, unchanged,
the ``MirrorPolicy`` custom resource (``gns.io/v1alpha1``) the Kubernetes controller reads;
it is also exactly what is stored at ``/gns/v1/policies/<name>`` (:meth:`MirrorPolicy.to_json`).
On the wire names are camelCase (``promoteTo``, ``maxLag``) and unknown fields are refused
at every level. Durations are Go-style strings (``30s``, ``5m``, ``1h30m``, ``500ms``): the
model keeps the text as written and exposes the value as :attr:`Duration.seconds`.

Validation happens in two stages, and both report *every* problem, never just the first:

* structure (pydantic): types, unknown fields, durations, names, each target's URI;
* meaning (:func:`validate_policy`): cross-field rules (interval required for ``mode: interval``,
  duplicate or overlapping targets, ``sync`` only to clusters, priority entries that are not
  targets, ``promoteTo``) and the checks against the namespace (unknown volume or cluster, a
  target equal to the volume's owner).

:func:`load_and_validate` runs both and raises one :class:`~namespace.errors.InvalidInput`
listing everything; when the structure is broken it still runs the meaning checks on the
parts that are well formed, so a user fixes a document in one round trip. This module does
no I/O and never imports ``federation``.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from cloud_adapters.errors import InvalidURI
from cloud_adapters.uri import StoreURI, parse_uri
from namespace.cache import NamespaceView
from namespace.durations import parse_duration
from namespace.errors import InvalidInput
from namespace.paths import check_name

__all__ = [
    "API_VERSION",
    "KIND",
    "MODES",
    "Duration",
    "Target",
    "Failover",
    "PolicySpec",
    "Metadata",
    "MirrorPolicy",
    "parse_policy",
    "parse_document",
    "validate_policy",
    "validate_document",
    "load_and_validate",
]

API_VERSION: Final = "gns.io/v1alpha1"
KIND: Final = "MirrorPolicy"
Mode = Literal["continuous", "interval", "manual", "sync"]
MODES: tuple[str, ...] = ("continuous", "interval", "manual", "sync")

# -- durations ------------------------------------------------------------------------------

class Duration(str):
    """A Go-style duration string that remembers its value in :attr:`seconds`.

    It *is* the text as written (so it serializes back unchanged); compare ``.seconds`` to
    compare lengths of time.
    """

    seconds: float

    def __new__(cls, text: str) -> Duration:
        seconds = parse_duration(text)
        obj = super().__new__(cls, text.strip())
        obj.seconds = seconds
        return obj

    def __getnewargs__(self) -> tuple[str]:  # copy/pickle re-parse the text
        return (str(self),)

    @classmethod
    def _validate(cls, value: Any) -> Duration:
        return value if isinstance(value, Duration) else cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # What the CRD's OpenAPI schema says about a duration field.
        return {"type": "string", "pattern": "^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"}


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
            raise ValueError("a target needs exactly one of 'cluster' or 'uri'")
        return self

    @property
    def name(self) -> str:
        """How status, priority and users name this target: the cluster id, or the URI as
        written without trailing '/'."""
        return self.cluster if self.cluster is not None else _uri_name(self.uri or "")

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
    """How long the owner must be Down before automatic promotion."""
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
    """The timer for ``mode: interval`` (accepted and unused with other modes)."""
    targets: list[Target]
    """Where the volume is mirrored, in the order status lists them."""
    failover: Failover = Field(default_factory=Failover)
    """Failover settings (automatic promotion off by default)."""
    max_lag: Duration = Duration("60s")
    """A target further behind than this is reported ``Lagging``."""

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
    """A mirror policy document (SPEC §6), shared by the CLI, etcd and Kubernetes."""

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


def _uri_name(uri: str) -> str:
    stripped = uri.strip().rstrip("/")
    return stripped or uri


# -- parsing ----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the
    last one silently, which would hide a typo such as two ``targets:`` blocks)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:  # unhashable key: let the base constructor report it
            break
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def parse_document(text: str) -> dict[str, Any]:
    """Decode YAML or JSON text into the raw document mapping (not yet validated)."""
    if not isinstance(text, str):
        raise InvalidInput("mirror policy must be text (YAML or JSON)")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InvalidInput(f"mirror policy is not valid YAML or JSON{where}: {problem}") from exc
    if not isinstance(data, dict):
        got = "empty document" if data is None else type(data).__name__
        raise InvalidInput(f"mirror policy must be a YAML or JSON mapping, got {got}")
    return data


def parse_policy(text: str) -> MirrorPolicy:
    """Parse YAML or JSON into a :class:`MirrorPolicy` (structure only; see
    :func:`load_and_validate` for the full check). Raises ``InvalidInput`` listing every
    structural problem."""
    data = parse_document(text)
    try:
        return MirrorPolicy.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_message(data, _pydantic_problems(exc))) from None


# -- validation -------------------------------------------------------------------------------


def validate_policy(policy: MirrorPolicy, view: NamespaceView) -> list[str]:
    """Every problem with a structurally valid ``policy`` in the namespace ``view``
    (empty when it may be stored)."""
    return _meaning_problems(policy.to_dict(), view)


def validate_document(data: dict[str, Any], view: NamespaceView) -> MirrorPolicy:
    """Validate a raw document mapping completely; one ``InvalidInput`` lists every problem."""
    try:
        policy = MirrorPolicy.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc) + _meaning_problems(data, view)
        raise InvalidInput(_message(data, problems)) from None
    problems = validate_policy(policy, view)
    if problems:
        raise InvalidInput(_message(data, problems))
    return policy


def load_and_validate(text: str, view: NamespaceView) -> MirrorPolicy:
    """Parse and validate ``text`` against ``view``; raises one ``InvalidInput`` whose
    message lists every problem, joined by ``"; "``."""
    return validate_document(parse_document(text), view)


def _message(data: Any, problems: list[str]) -> str:
    name = ""
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        name = f" {meta['name']!r}"
    # "; " separates problems, so none may contain it (InvalidURI messages do).
    return f"invalid mirror policy{name}: " + "; ".join(p.replace("; ", ", ") for p in problems)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "document"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required field missing"
        elif kind in ("value_error", "assertion_error"):
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        elif kind == "literal_error":
            msg = msg.replace("Input should be", "must be")
        else:
            msg = re.sub(r" or instance of \w+", "", msg.replace("Input should be", "must be"))
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        problems.append(f"{_loc(tuple(err['loc']))}: {msg}")
    return problems


@dataclass(frozen=True)
class _T:
    """A well-formed target found in a raw document."""

    index: int
    name: str
    cluster: str | None
    store: StoreURI | None


def _good_targets(targets: Any) -> list[_T]:
    """The targets of a raw document whose own fields are valid (the others are reported by
    pydantic and skipped here so no problem is reported twice)."""
    found: list[_T] = []
    if not isinstance(targets, list):
        return found
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            continue
        cluster, uri = t.get("cluster"), t.get("uri")
        if (cluster is None) == (uri is None):
            continue
        if cluster is not None:
            if _valid_name(cluster):
                found.append(_T(i, cluster, cluster, None))
            continue
        if not isinstance(uri, str):
            continue
        try:
            store = parse_uri(uri)
        except InvalidURI:
            continue
        if store.scheme == "file" and store.prefix == "/":
            continue
        found.append(_T(i, _uri_name(uri), None, store))
    return found


def _valid_name(v: Any) -> bool:
    try:
        check_name("name", v)
    except InvalidInput:
        return False
    return True


def _components(store: StoreURI) -> tuple[str, ...]:
    return (store.scheme, store.container, *[p for p in store.prefix.split("/") if p])


def _meaning_problems(data: Any, view: NamespaceView) -> list[str]:
    """Cross-field and namespace checks on the well-formed parts of a raw document."""
    problems: list[str] = []
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return problems

    # The volume and its owner.
    owner: str | None = None
    volume = spec.get("volume")
    if isinstance(volume, str) and _valid_name(volume):
        vol = view.volumes.get(volume)
        if vol is None:
            problems.append(f"spec.volume: unknown volume {volume!r}")
        else:
            owner = vol.owner

    # Mode and interval.
    mode = spec.get("mode", "continuous")
    has_interval = spec.get("interval") is not None
    # An interval beside another mode is accepted and unused: SPEC §6's own example sets
    # `interval: 5m` with `mode: continuous`, so switching modes needs no edit of the rest.
    if mode == "interval" and not has_interval:
        problems.append("spec.interval: required when mode is 'interval'")

    # Targets.
    raw_targets = spec.get("targets")
    if isinstance(raw_targets, list) and not raw_targets:
        problems.append("spec.targets: no targets (give at least one cluster or uri)")
    targets = _good_targets(raw_targets)
    seen: dict[str, _T] = {}
    for t in targets:
        where = f"spec.targets[{t.index}]"
        key = t.cluster if t.cluster is not None else str(t.store)
        if key in seen:
            problems.append(f"{where}: duplicate target {t.name} (same as targets[{seen[key].index}])")
            continue
        seen[key] = t
        if t.cluster is not None:
            if t.cluster not in view.clusters:
                problems.append(f"{where}.cluster: unknown cluster {t.cluster!r}")
            if owner is not None and t.cluster == owner:
                problems.append(
                    f"{where}.cluster: {t.cluster!r} is the owner of volume {volume!r} "
                    "(a volume cannot mirror to its own owner)"
                )
        elif mode == "sync":
            problems.append(
                f"{where}.uri: mode 'sync' needs cluster targets but {t.name} is an object store"
            )
    # Store targets nested inside one another would delete each other's files.
    stores = [t for t in seen.values() if t.store is not None]
    for i, a in enumerate(stores):
        for b in stores[i + 1 :]:
            ca, cb = _components(a.store), _components(b.store)  # type: ignore[arg-type]
            short, long_ = (a, b) if len(ca) <= len(cb) else (b, a)
            cs, cl = _components(short.store), _components(long_.store)  # type: ignore[arg-type]
            if cl[: len(cs)] == cs:
                problems.append(
                    f"spec.targets[{long_.index}]: {long_.name} lies inside target "
                    f"{short.name} (targets[{short.index}]); their contents would clash"
                )

    # Failover.
    failover = spec.get("failover")
    if isinstance(failover, dict):
        names = {t.name for t in targets} | {str(t.store) for t in targets if t.store}
        priority = failover.get("priority")
        if isinstance(priority, list):
            listed: set[str] = set()
            for i, p in enumerate(priority):
                if not isinstance(p, str):
                    continue
                canon = _canonical(p)
                if p not in names and canon not in names:
                    problems.append(
                        f"spec.failover.priority[{i}]: {p!r} is not one of the policy's targets"
                    )
                elif canon in listed:
                    problems.append(f"spec.failover.priority[{i}]: {p!r} is listed twice")
                listed.add(canon)
        automatic = failover.get("automatic") is True
        promote_to = failover.get("promoteTo")
        if isinstance(promote_to, str) and _valid_name(promote_to):
            if promote_to not in view.clusters:
                problems.append(f"spec.failover.promoteTo: unknown cluster {promote_to!r}")
            elif owner is not None and promote_to == owner:
                problems.append(
                    f"spec.failover.promoteTo: {promote_to!r} already owns volume {volume!r}"
                )
        elif promote_to is None and automatic:
            store_targets = [t.name for t in targets if t.store is not None]
            if store_targets:
                problems.append(
                    "spec.failover.promoteTo: required when failover is automatic and an "
                    f"object-store target ({store_targets[0]}) may be chosen"
                )
    return problems


def _canonical(name: str) -> str:
    if "://" not in name:
        return name
    try:
        return str(parse_uri(name))
    except InvalidURI:
        return name.rstrip("/")
