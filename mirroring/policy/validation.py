"""Policy validation in two stages, each reporting every problem: structure (pydantic) and
meaning (cross-field rules and checks against the namespace)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cloud_adapters.errors import InvalidURI
from cloud_adapters.uri import StoreURI, parse_uri
from mirroring.policy.duration import Duration
from mirroring.policy.model import ONE_OF_CLUSTER_OR_URI, MirrorPolicy, uri_target_name
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput
from namespace.paths import check_name

# -- validation -------------------------------------------------------------------------------


def validate_policy(policy: MirrorPolicy, view: NamespaceView) -> list[str]:
    """Every problem with a structurally valid ``policy`` in the namespace ``view``
    (empty when it may be stored)."""
    return _meaning_problems(policy.to_dict(), view)


def validate_document(data: dict[str, Any], view: NamespaceView) -> MirrorPolicy:
    """Validate a raw document mapping completely; one ``InvalidInput`` lists every problem."""
    policy, problems = check_structure(data)
    if policy is None:
        # Broken structure: the meaning checks still run on the parts that are well formed.
        problems += _meaning_problems(data, view)
    else:
        problems += validate_policy(policy, view)
    if policy is None or problems:
        raise InvalidInput(describe_problems(data, problems))
    return policy


def check_structure(data: Any) -> tuple[MirrorPolicy | None, list[str]]:
    """The document as a policy (None if pydantic refuses it) and every structural problem.

    Beside what pydantic reports, two rules it cannot see once a field has failed: a
    target's ``cluster``/``uri`` exclusivity (the model checks it only after both fields
    validate, so ``{cluster: x, uri: ftp://..}`` got the bad scheme and not this), and the
    header: ``apiVersion`` and ``kind`` may be left out together, but a document naming
    one (``kind: Deployment``) must name the other."""
    policy: MirrorPolicy | None = None
    try:
        policy = MirrorPolicy.model_validate(data)
        problems: list[str] = []
    except ValidationError as exc:
        problems = pydantic_problems(exc)
    for extra in _header_problems(data) + _target_shape_problems(data):
        if extra not in problems:  # pydantic reports a one-of whose fields are valid itself
            problems.append(extra)
    return (policy if not problems else None), problems


def _header_problems(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return []
    given = [k for k in ("apiVersion", "kind") if k in data]
    if len(given) != 1:
        return []
    missing = "kind" if given == ["apiVersion"] else "apiVersion"
    return [f"{missing}: required field missing (the document gives {given[0]})"]


def _target_shape_problems(data: Any) -> list[str]:
    spec = data.get("spec") if isinstance(data, dict) else None
    targets = spec.get("targets") if isinstance(spec, dict) else None
    if not isinstance(targets, list):
        return []
    return [
        f"spec.targets[{i}]: {ONE_OF_CLUSTER_OR_URI}"
        for i, t in enumerate(targets)
        if isinstance(t, dict) and (t.get("cluster") is None) == (t.get("uri") is None)
    ]


def describe_problems(data: Any, problems: list[str]) -> str:
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


def pydantic_problems(exc: ValidationError) -> list[str]:
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
        found.append(_T(i, uri_target_name(uri), None, store))
    return found


def _valid_name(v: Any) -> bool:
    try:
        check_name("name", v)
    except InvalidInput:
        return False
    return True


def _components(store: StoreURI) -> tuple[str, ...]:
    return (store.scheme, store.container, *[p for p in store.prefix.split("/") if p])


# The core never dials in to an edge site (SPEC §8), so no mirror pass or hydration can
# reach one: such a target's replica was kept on its hub, shown Synced while the site held
# nothing (and a `mode: sync` write acknowledged so).
_EDGE_SITE_HOLDS_NOTHING = (
    "{!r} is an edge site, which only dials out (SPEC §8): it cannot hold a copy of "
    "another cluster's volume (an edge site's own volumes mirror from it to the core)"
)


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
    problems += _zero_duration_problems(spec)

    # Targets. One equal to the owner is refused whatever the history: after a failover
    # promoted a target, the document must name the former owner instead (or nothing: a
    # former owner stays a target of the new one, SPEC §7; see mirroring.status).
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
            elif view.clusters[t.cluster].linked_site:
                problems.append(f"{where}.cluster: {_EDGE_SITE_HOLDS_NOTHING.format(t.cluster)}")
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
    stores = [(t, _components(t.store)) for t in seen.values() if t.store is not None]
    for i, (a, ca) in enumerate(stores):
        for b, cb in stores[i + 1 :]:
            (short, cs), (long_, cl) = ((a, ca), (b, cb)) if len(ca) <= len(cb) else ((b, cb), (a, ca))
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
            elif view.clusters[promote_to].linked_site:
                problems.append(f"spec.failover.promoteTo: {_EDGE_SITE_HOLDS_NOTHING.format(promote_to)}")
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


def _zero_duration_problems(spec: dict[str, Any]) -> list[str]:
    """Zero where zero makes no sense. Checked here, when a policy is applied, and not in the
    model: a policy stored before this rule must still load for the scheduler. (``maxLag: 0``
    stays valid: any lag at all is reported.)"""
    failover = spec.get("failover")
    checks = (
        ("spec.interval", spec.get("interval"),
         "a zero-length timer would start a pass the moment the last one ends"),
        ("spec.failover.after", failover.get("after") if isinstance(failover, dict) else None,
         "zero would promote a target the moment the owner is Down, on any blip"),
    )
    return [f"{where}: must be longer than 0 ({why})"
            for where, value, why in checks if _seconds(value) == 0]


def _seconds(value: Any) -> float | None:
    """The length of a duration field, or None when absent or malformed (the structure check
    reports that one)."""
    if value is None:
        return None
    try:
        return Duration.parse(value).seconds
    except ValueError:
        return None


def _canonical(name: str) -> str:
    if "://" not in name:
        return name
    try:
        return str(parse_uri(name))
    except InvalidURI:
        return name.rstrip("/")

