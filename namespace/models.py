"""Control-plane records as stored in etcd (JSON) and shown by ``--json`` (SPEC §4).

Pydantic models validate on the way in from users and from etcd alike, so a malformed key
written by an older or buggy controller is caught where it is read.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from namespace.paths import check_name, normalize, normalize_relative

Provider = Literal["onprem", "aws", "gcp", "azure", "edge"]
PROVIDERS: tuple[str, ...] = ("onprem", "aws", "gcp", "azure", "edge")


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


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
    """Seconds its controller's liveness lease lasts without renewal."""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_name("cluster", v)


class ClusterView(ClusterSpec):
    """A cluster as users see it: its spec plus liveness."""

    state: Literal["Ready", "Down"] = "Down"


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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("volume", v)


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
