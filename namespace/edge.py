"""Edge join tokens and site records in etcd: the control-plane half of SPEC §8.

Why it exists: an edge site trades a single-use token for its own identity at a hub. The
token's secret never reaches etcd (only its sha256), and redeeming is ONE transaction that
compares the token record unchanged (so still unused) and in the same step marks it used and
writes the site record: of two joins racing with one token, exactly one wins. Expiry is
checked against the token's own ``expires_at`` before the transaction (etcd cannot compare
clocks); a token that expires between the check and the commit was valid when presented.

Keys (under ``/gns/v1/``, values JSON)::

    edge/tokens/<id>   {id, site, hub, secret_sha256, ca_sha256, created, expires_at, used_at}
    edge/sites/<site>  {site, hub, credential_sha256, previous_sha256, credential_expires_at,
                        joined_at, token}   (credential fields empty with TLS: there the
                        site's certificate is its identity)
    edge/links/<site>  {site, hub, connected_since, backlog: {versions, bytes}} bound to the
                       site's liveness lease (gone when the site is Down)
    edge/backlogs/<site>  {backlog: {versions, bytes}, reported_at}: the last count the site
                       reported, kept when its link goes (what ``gns edge list`` shows for a
                       Down site, with its time, instead of a 0 nobody counted)

The hub (never the edge itself, which has no etcd access) calls in here. Nothing here
decides from message text; reasons are carried by the exception types.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from namespace import schema
from namespace.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from namespace.etcd import Etcd
from namespace.paths import check_name

EDGE = schema.ROOT + "edge/"
TOKENS = EDGE + "tokens/"
SITES = EDGE + "sites/"
LINKS = EDGE + "links/"
BACKLOGS = EDGE + "backlogs/"
HUBS = EDGE + "hubs/"

TOKEN_PREFIX = "K10"
DEFAULT_TOKEN_TTL = 3600.0
MAX_TOKEN_TTL = 30 * 86400.0
INSECURE_CA = "insecure"
"""What a token pins when the hub runs without TLS (the pin still has to match)."""


def token_key(token_id: str) -> bytes:
    return (TOKENS + token_id).encode()


def site_key(site: str) -> bytes:
    return (SITES + site).encode()


def link_key(site: str) -> bytes:
    return (LINKS + site).encode()


def backlog_key(site: str) -> bytes:
    return (BACKLOGS + site).encode()


def hub_key(hub: str) -> bytes:
    """``{"join": HOST:PORT}``: a hub's token-only join port (only hubs that sign certificates)."""
    return (HUBS + hub).encode()


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def ca_fingerprint(ca_pem: bytes | None) -> str:
    """The pin a token carries: sha256 of the hub CA's PEM, or ``insecure`` without TLS."""
    return sha256_hex(ca_pem) if ca_pem else INSECURE_CA


@dataclass(frozen=True)
class ParsedToken:
    ca_sha256: str
    token_id: str
    secret: str
    join: str = ""
    """The issuing hub's token-only join port (``HOST:PORT``), where the hub signs site
    certificates (what sites of every release read)."""
    join_ports: tuple[tuple[str, str], ...] = ()
    """``(endpoint, token-only join port)`` of each hub of the federation that signs site
    certificates, the issuing hub first, so a site can redeem the token at the hub its
    ``--hub`` names. Empty in tokens made before tokens carried it."""


def parse_token(token: str) -> ParsedToken:
    """Split ``K10<ca>::<id>.<secret>[~<endpoint>=<join>[,...]][@<join>]``; a malformed token
    is bad input (exit 2: mistyped or cut short; one of the right form that does not match
    a record is refused as forged, exit 4).

    The ``~`` list sits inside what older sites take for the secret (they only read the
    ``@`` join port, and send the token on whole), so they still join with a new token."""
    text = token.strip()
    head, sep, rest = text.partition("::")
    tid, dot, tail = rest.partition(".")
    tail, at, join = tail.partition("@")
    secret, tilde, listed = tail.partition("~")
    ports = tuple(_join_entry(e) for e in listed.split(",")) if tilde else ()
    if (not sep or not dot or not head.startswith(TOKEN_PREFIX) or len(head) <= len(TOKEN_PREFIX)
            or not tid or not secret or not all(c in "0123456789abcdef" for c in tid)
            or (at and not _is_address(join)) or (tilde and not at) or not all(ports)):
        raise InvalidInput("token malformed: expected K10<ca-hash>::<id>.<secret>@<host:port>, "
                           "as `gns edge token create` prints it")
    return ParsedToken(head[len(TOKEN_PREFIX):], tid, secret, join, tuple(p for p in ports if p))


def _join_entry(text: str) -> tuple[str, str] | None:
    """``ENDPOINT=JOIN``, None if malformed."""
    endpoint, eq, join = text.partition("=")
    return (endpoint, join) if eq and _is_address(endpoint) and _is_address(join) else None


def _is_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


async def site_name_free(etcd: Etcd, site: str) -> Any:
    """Refuse (Conflict) a site name that a registered core cluster holds, else return the
    etcd compare that keeps it so until the caller's transaction commits.

    Why: a site is registered as cluster ``<site>`` and gets a certificate for
    ``cluster:<site>``; under a core cluster's name it would be handed that cluster's
    identity and could overwrite its record. A cluster of provider ``edge`` is the site
    itself (joined before), which may join again."""
    key = schema.cluster(site)
    kv = await etcd.call(etcd.client.get, key)
    if kv is None:
        return etcd.tx.create(key) == 0
    try:
        provider = json.loads(kv.value).get("provider")
    except (ValueError, AttributeError):  # unreadable: something holds the name, never take it
        provider = None
    if provider != "edge":
        raise Conflict(f"site name {site!r} is taken: {site!r} is a registered core cluster "
                       f"(provider {provider or 'unknown'}); pick another site name")
    return etcd.tx.mod(key) == kv.mod_revision


async def refuse_linked_site(etcd: Etcd, site: str) -> None:
    """Refuse (Conflict) a token for a site that is linked now: a second process under its
    name, joined with it, would take the link from the first and the two would keep
    taking it from each other. A site that is Down (its process gone, three heartbeats
    after) may join again with a new token: its data dir may be lost."""
    if await etcd.get(schema.alive(site)) is not None:
        raise Conflict(f"site {site!r} is joined and linked now: a second process under its name "
                       "would fight it for the link; stop that one first (it is Down three "
                       "heartbeats later), or pick another site name")


async def create_token(etcd: Etcd, site: str, hub: str, ttl: float, ca_sha256: str) -> dict[str, Any]:
    """Store a new token record and return ``{"token", "site", "hub", "expires_at"}``.

    Refused (Conflict, nothing stored) if a core cluster is named ``site``, or the site is
    linked now."""
    check_name("site", site)
    check_name("hub cluster", hub)
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise InvalidInput(f"invalid --ttl {ttl:g}s: more than 0 and at most 720h (30 days)")
    tx = etcd.tx
    for _ in range(3):
        # A fresh id each try: the cluster record may move under us (a joined site
        # re-registering), and 64 random bits may collide; neither is ever overwritten.
        name_free = await site_name_free(etcd, site)
        await refuse_linked_site(etcd, site)  # after: a core cluster's name says so first
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24)
        now = time.time()
        record = {
            "id": token_id, "site": site, "hub": hub, "secret_sha256": sha256_hex(secret),
            "ca_sha256": ca_sha256, "created": now, "expires_at": now + ttl, "used_at": None,
        }
        ok, _ = await etcd.txn([tx.create(token_key(token_id)) == 0, name_free],
                               [tx.put(token_key(token_id), json.dumps(record).encode())])
        if ok:
            break
    else:
        raise Conflict(f"could not store a token for site {site!r} (its cluster record keeps changing); try again")
    ports = await _join_ports(etcd, hub) if ca_sha256 != INSECURE_CA else []
    return {"token": token_text(ca_sha256, token_id, secret, ports), "site": site, "hub": hub,
            "expires_at": record["expires_at"]}


def token_text(ca_sha256: str, token_id: str, secret: str, ports: list[tuple[str, str]]) -> str:
    """The token :func:`parse_token` reads; ``ports`` as in ``ParsedToken.join_ports``."""
    suffix = f"~{','.join(f'{ep}={j}' for ep, j in ports)}@{ports[0][1]}" if ports else ""
    return f"{TOKEN_PREFIX}{ca_sha256}::{token_id}.{secret}{suffix}"


# A token stays short enough to paste: in a federation of many clusters it names the issuing
# hub and a few more; a --hub beyond them falls back to the ones it names.
_TOKEN_HUBS_MAX = 8


async def _join_ports(etcd: Etcd, hub: str) -> list[tuple[str, str]]:
    """``(endpoint, token-only join port)`` of every core hub that signs site certificates,
    ``hub`` first: a token names them all, so the site can redeem it at whichever of them
    its ``--hub`` addresses are (a site holding only a token cannot speak to a hub's main
    port, which demands a client certificate)."""
    records, _ = await etcd.get_prefix(HUBS.encode())
    clusters, _ = await etcd.get_prefix(schema.CLUSTERS.encode())
    endpoints: dict[str, str] = {}
    for key, value in clusters:
        try:
            spec = json.loads(value)
        except ValueError:
            continue
        if isinstance(spec, dict) and spec.get("provider") != "edge" and _is_address(str(spec.get("endpoint") or "")):
            endpoints[key.decode()[len(schema.CLUSTERS):]] = str(spec["endpoint"])
    joins: dict[str, tuple[str, str]] = {}
    for key, value in records:
        name = key.decode()[len(HUBS):]
        try:
            join = str(json.loads(value or b"{}").get("join") or "")
        except (ValueError, AttributeError):
            continue
        if name in endpoints and _is_address(join):
            joins[name] = (endpoints[name], join)
    return [joins[h] for h in sorted(joins, key=lambda h: (h != hub, h))][:_TOKEN_HUBS_MAX]


async def redeem_token(etcd: Etcd, token: str, site: str, hub: str, ca_sha256: str,
                       credential_ttl: float, *, issue_credential: bool = True) -> tuple[str, dict[str, Any]]:
    """Check ``token`` for ``site`` and, in one transaction, mark it used and (re)write the
    site record with a fresh credential. Returns (credential, site record).

    ``issue_credential=False`` (a TLS federation: the site's certificate is its identity)
    records no credential at all: ``""`` is returned and no credential ever matches.

    Refusals (exit 4, nothing written): forged (unknown id, wrong secret, wrong CA pin),
    wrong site, already used, expired, and a site named like a registered core cluster
    (the token may predate that cluster).
    """
    check_name("site", site)
    parsed = parse_token(token)
    if not hmac.compare_digest(parsed.ca_sha256, ca_sha256):
        raise PermissionDenied("token refused: it pins another CA than this hub's (forged, or the wrong federation)")
    key = token_key(parsed.token_id)
    kv = await etcd.call(etcd.client.get, key)
    if kv is None:
        raise PermissionDenied("token refused: unknown token (forged or deleted)")
    record = json.loads(kv.value)
    if not hmac.compare_digest(record.get("secret_sha256", ""), sha256_hex(parsed.secret)):
        raise PermissionDenied("token refused: wrong secret (forged)")
    if record.get("site") != site:
        raise PermissionDenied(f"token refused: it was issued for site {record.get('site')!r}, not {site!r}")
    if record.get("used_at"):
        raise Conflict(f"token refused: already used (at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(record['used_at']))})")
    now = time.time()
    if now >= float(record.get("expires_at", 0)):
        raise Conflict("token refused: expired")
    name_free = await site_name_free(etcd, site)  # before the token is used up
    await refuse_linked_site(etcd, site)  # a token made while it was Down: not now
    credential = secrets.token_urlsafe(32) if issue_credential else ""
    site_record = {
        "site": site, "hub": hub, "credential_sha256": sha256_hex(credential) if credential else "",
        "previous_sha256": "", "credential_expires_at": now + credential_ttl if credential else 0.0,
        "joined_at": now, "token": parsed.token_id,
    }
    used = dict(record, used_at=now, used_by_hub=hub)
    tx = etcd.tx
    ok, _ = await etcd.txn(
        [tx.value(key) == kv.value, name_free],
        [tx.put(key, json.dumps(used).encode()),
         tx.put(site_key(site), json.dumps(site_record).encode())],
    )
    if not ok:
        if await etcd.get(key) == kv.value:  # the token is intact: the name is what changed
            await site_name_free(etcd, site)
            raise Conflict(f"site {site!r}: its cluster record changed during the join; retry")
        raise Conflict("token refused: already used (another join won the race)")
    return credential, site_record


async def site_record(etcd: Etcd, site: str) -> dict[str, Any] | None:
    raw = await etcd.get(site_key(site))
    return None if raw is None else dict(json.loads(raw))


async def check_credential(etcd: Etcd, site: str, credential: str) -> dict[str, Any]:
    """The site record if ``credential`` is the site's current (or just-replaced) one."""
    record = await site_record(etcd, site)
    if record is None:
        raise PermissionDenied(f"site {site!r} has not joined (no identity on record)")
    if not credential or not record.get("credential_sha256"):
        raise PermissionDenied(f"site {site!r}: identity refused (no credential: the site links with "
                               "its certificate)")
    digest = sha256_hex(credential)
    ok = hmac.compare_digest(record["credential_sha256"], digest) or (
        bool(record.get("previous_sha256")) and hmac.compare_digest(record["previous_sha256"], digest))
    if not ok:
        raise PermissionDenied(f"site {site!r}: identity refused (wrong or revoked credential)")
    if time.time() >= float(record.get("credential_expires_at", 0)):
        raise PermissionDenied(f"site {site!r}: identity expired; join again with a new token")
    return record


async def renew_credential(etcd: Etcd, site: str, credential: str, credential_ttl: float) -> tuple[str, float]:
    """Issue a new credential; the one presented stays valid until the next (the site may
    crash before it stores the new one)."""
    record = await check_credential(etcd, site, credential)
    raw = json.dumps(record).encode()
    fresh = secrets.token_urlsafe(32)
    expires = time.time() + credential_ttl
    new = dict(record, credential_sha256=sha256_hex(fresh), previous_sha256=sha256_hex(credential),
               credential_expires_at=expires)
    tx = etcd.tx
    current = await etcd.get(site_key(site))
    ok, _ = await etcd.txn([tx.value(site_key(site)) == (current or raw)],
                           [tx.put(site_key(site), json.dumps(new).encode())])
    if not ok:
        raise Conflict(f"site {site!r}: identity changed during renewal; retry")
    return fresh, expires


async def list_sites(etcd: Etcd) -> list[dict[str, Any]]:
    """``gns edge list``: every joined site with its hub, state, connected-since, backlog.

    A Ready site's backlog is its hub's live count (``backlog_as_of`` None). A Down site's
    is the last count it reported before its link went (``backlog_as_of`` its time): the
    site goes on writing while away, so the backlog can only have grown since."""
    sites, _ = await etcd.get_prefix(SITES.encode())
    links, _ = await etcd.get_prefix(LINKS.encode())
    reports, _ = await etcd.get_prefix(BACKLOGS.encode())
    alive, _ = await etcd.get_prefix(schema.ALIVE.encode())
    live = {k.decode()[len(schema.ALIVE):] for k, _ in alive}
    link_of = {k.decode()[len(LINKS):]: json.loads(v) for k, v in links}
    report_of = {k.decode()[len(BACKLOGS):]: json.loads(v) for k, v in reports}
    out = []
    for key, value in sites:
        rec = json.loads(value)
        name = key.decode()[len(SITES):]
        link = link_of.get(name, {})
        ready = name in live and bool(link)
        report = {} if ready else report_of.get(name, {})
        backlog = (link if ready else report).get("backlog") or {"versions": 0, "bytes": 0}
        out.append({
            "site": name,
            "hub": link.get("hub") or rec.get("hub", ""),
            "state": "Ready" if ready else "Down",
            "connected_since": link.get("connected_since"),
            "backlog": {"versions": int(backlog.get("versions", 0)), "bytes": int(backlog.get("bytes", 0))},
            "backlog_as_of": report.get("reported_at"),
        })
    return sorted(out, key=lambda s: s["site"])


async def forget_site(etcd: Etcd, site: str) -> None:
    """Drop a site's identity (its credential stops working at the next connect)."""
    tx = etcd.tx
    ok, _ = await etcd.txn([tx.create(site_key(site)) != 0],
                           [tx.delete(site_key(site)), tx.delete(backlog_key(site))])
    if not ok:
        raise NotFound(f"edge site {site!r} not found")
