from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(_message.Message):
    __slots__ = ("global_path", "volume", "relative_path", "epoch", "consistency", "max_staleness_s")
    GLOBAL_PATH_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    global_path: str
    volume: str
    relative_path: str
    epoch: int
    consistency: str
    max_staleness_s: float
    def __init__(self, global_path: _Optional[str] = ..., volume: _Optional[str] = ..., relative_path: _Optional[str] = ..., epoch: _Optional[int] = ..., consistency: _Optional[str] = ..., max_staleness_s: _Optional[float] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("path", "size", "mtime", "sha256", "version", "type", "served_by", "stale", "mode")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    mtime: float
    sha256: str
    version: int
    type: str
    served_by: str
    stale: bool
    mode: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., mtime: _Optional[float] = ..., sha256: _Optional[str] = ..., version: _Optional[int] = ..., type: _Optional[str] = ..., served_by: _Optional[str] = ..., stale: _Optional[bool] = ..., mode: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("cluster", "ready", "fenced", "api_versions", "release")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    API_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    ready: bool
    fenced: bool
    api_versions: _containers.RepeatedScalarFieldContainer[str]
    release: str
    def __init__(self, cluster: _Optional[str] = ..., ready: _Optional[bool] = ..., fenced: _Optional[bool] = ..., api_versions: _Optional[_Iterable[str]] = ..., release: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class Owner(_message.Message):
    __slots__ = ("cluster", "endpoint", "epoch")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    endpoint: str
    epoch: int
    def __init__(self, cluster: _Optional[str] = ..., endpoint: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("target", "version", "lag_seconds")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    target: str
    version: int
    lag_seconds: float
    def __init__(self, target: _Optional[str] = ..., version: _Optional[int] = ..., lag_seconds: _Optional[float] = ...) -> None: ...

class ResolveReply(_message.Message):
    __slots__ = ("path", "mount", "volume", "relative_path", "owner", "replicas")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    path: str
    mount: str
    volume: str
    relative_path: str
    owner: Owner
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    def __init__(self, path: _Optional[str] = ..., mount: _Optional[str] = ..., volume: _Optional[str] = ..., relative_path: _Optional[str] = ..., owner: _Optional[_Union[Owner, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: Target
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: Target
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "type", "size", "mtime", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    size: int
    mtime: float
    mode: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., size: _Optional[int] = ..., mtime: _Optional[float] = ..., mode: _Optional[int] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("entries", "served_by", "stale")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    served_by: str
    stale: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ..., served_by: _Optional[str] = ..., stale: _Optional[bool] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("target", "offset", "length")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    target: Target
    offset: int
    length: int
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReadChunk(_message.Message):
    __slots__ = ("info", "data")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    info: FileInfo
    data: bytes
    def __init__(self, info: _Optional[_Union[FileInfo, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteHeader(_message.Message):
    __slots__ = ("target", "mtime", "expect_sha256", "size_hint", "mode", "if_absent", "ends")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    EXPECT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_HINT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    target: Target
    mtime: float
    expect_sha256: str
    size_hint: int
    mode: int
    if_absent: bool
    ends: bool
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., mtime: _Optional[float] = ..., expect_sha256: _Optional[str] = ..., size_hint: _Optional[int] = ..., mode: _Optional[int] = ..., if_absent: _Optional[bool] = ..., ends: _Optional[bool] = ...) -> None: ...

class WriteChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WriteHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WriteHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: FileInfo
    def __init__(self, info: _Optional[_Union[FileInfo, _Mapping]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WriteHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WriteHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PutBatchRequest(_message.Message):
    __slots__ = ("puts",)
    PUTS_FIELD_NUMBER: _ClassVar[int]
    puts: _containers.RepeatedCompositeFieldContainer[PutRequest]
    def __init__(self, puts: _Optional[_Iterable[_Union[PutRequest, _Mapping]]] = ...) -> None: ...

class PutOutcome(_message.Message):
    __slots__ = ("reply", "error_kind", "error", "retryable")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    reply: WriteReply
    error_kind: str
    error: str
    retryable: bool
    def __init__(self, reply: _Optional[_Union[WriteReply, _Mapping]] = ..., error_kind: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class PutBatchReply(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[PutOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[PutOutcome, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("target", "recursive", "keep_parent")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    KEEP_PARENT_FIELD_NUMBER: _ClassVar[int]
    target: Target
    recursive: bool
    keep_parent: bool
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., recursive: _Optional[bool] = ..., keep_parent: _Optional[bool] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class VolumeStateRequest(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: str
    def __init__(self, volume: _Optional[str] = ...) -> None: ...

class VolumeStateReply(_message.Message):
    __slots__ = ("volume", "version", "epoch", "role", "files", "bytes")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    volume: str
    version: int
    epoch: int
    role: str
    files: int
    bytes: int
    def __init__(self, volume: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., role: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class RenameRequest(_message.Message):
    __slots__ = ("target", "destination", "destination_relative")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_RELATIVE_FIELD_NUMBER: _ClassVar[int]
    target: Target
    destination: str
    destination_relative: str
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., destination: _Optional[str] = ..., destination_relative: _Optional[str] = ...) -> None: ...

class MutationReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class MkdirRequest(_message.Message):
    __slots__ = ("target", "mode", "mtime")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    target: Target
    mode: int
    mtime: float
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., mode: _Optional[int] = ..., mtime: _Optional[float] = ...) -> None: ...

class RmdirRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: Target
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ...) -> None: ...

class SetAttrRequest(_message.Message):
    __slots__ = ("target", "set_mode", "mode", "set_mtime", "mtime")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SET_MODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SET_MTIME_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    target: Target
    set_mode: bool
    mode: int
    set_mtime: bool
    mtime: float
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., set_mode: _Optional[bool] = ..., mode: _Optional[int] = ..., set_mtime: _Optional[bool] = ..., mtime: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("target", "from_version")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    target: Target
    from_version: int
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., from_version: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("version", "op", "path", "src", "volume", "size", "mtime", "mode", "relative_path")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    version: int
    op: str
    path: str
    src: str
    volume: str
    size: int
    mtime: float
    mode: int
    relative_path: str
    def __init__(self, version: _Optional[int] = ..., op: _Optional[str] = ..., path: _Optional[str] = ..., src: _Optional[str] = ..., volume: _Optional[str] = ..., size: _Optional[int] = ..., mtime: _Optional[float] = ..., mode: _Optional[int] = ..., relative_path: _Optional[str] = ...) -> None: ...

class ReplicaStateRequest(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: str
    def __init__(self, volume: _Optional[str] = ...) -> None: ...

class ReplicaStateReply(_message.Message):
    __slots__ = ("version", "epoch", "exists")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    epoch: int
    exists: bool
    def __init__(self, version: _Optional[int] = ..., epoch: _Optional[int] = ..., exists: _Optional[bool] = ...) -> None: ...

class ReplicaFile(_message.Message):
    __slots__ = ("path", "size", "sha256", "mtime", "mode")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    mtime: float
    mode: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., mtime: _Optional[float] = ..., mode: _Optional[int] = ...) -> None: ...

class ReplicaDir(_message.Message):
    __slots__ = ("path", "mode", "mtime")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    mtime: float
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., mtime: _Optional[float] = ...) -> None: ...

class ReplicaFilesRequest(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: str
    def __init__(self, volume: _Optional[str] = ...) -> None: ...

class ReplicaHasRequest(_message.Message):
    __slots__ = ("volume", "sha256")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    volume: str
    sha256: str
    def __init__(self, volume: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ReplicaHasReply(_message.Message):
    __slots__ = ("has",)
    HAS_FIELD_NUMBER: _ClassVar[int]
    has: bool
    def __init__(self, has: _Optional[bool] = ...) -> None: ...

class ReplicaLacksRequest(_message.Message):
    __slots__ = ("volume", "sha256", "rehash")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REHASH_FIELD_NUMBER: _ClassVar[int]
    volume: str
    sha256: _containers.RepeatedScalarFieldContainer[str]
    rehash: bool
    def __init__(self, volume: _Optional[str] = ..., sha256: _Optional[_Iterable[str]] = ..., rehash: _Optional[bool] = ...) -> None: ...

class ReplicaLacksReply(_message.Message):
    __slots__ = ("lacking",)
    LACKING_FIELD_NUMBER: _ClassVar[int]
    lacking: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lacking: _Optional[_Iterable[int]] = ...) -> None: ...

class ReplicaBlobHeader(_message.Message):
    __slots__ = ("volume", "source", "epoch", "sha256", "size")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    volume: str
    source: str
    epoch: int
    sha256: str
    size: int
    def __init__(self, volume: _Optional[str] = ..., source: _Optional[str] = ..., epoch: _Optional[int] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ReplicaBlobChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ReplicaBlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ReplicaBlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReplicaBlobReply(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class ReplicaCommitHeader(_message.Message):
    __slots__ = ("volume", "source", "epoch", "version", "full", "with_dirs", "ends")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    WITH_DIRS_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    volume: str
    source: str
    epoch: int
    version: int
    full: bool
    with_dirs: bool
    ends: bool
    def __init__(self, volume: _Optional[str] = ..., source: _Optional[str] = ..., epoch: _Optional[int] = ..., version: _Optional[int] = ..., full: _Optional[bool] = ..., with_dirs: _Optional[bool] = ..., ends: _Optional[bool] = ...) -> None: ...

class ReplicaCommitEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaCommitChunk(_message.Message):
    __slots__ = ("header", "put", "delete", "dir", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    DIR_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: ReplicaCommitHeader
    put: ReplicaFile
    delete: str
    dir: ReplicaDir
    end: ReplicaCommitEnd
    def __init__(self, header: _Optional[_Union[ReplicaCommitHeader, _Mapping]] = ..., put: _Optional[_Union[ReplicaFile, _Mapping]] = ..., delete: _Optional[str] = ..., dir: _Optional[_Union[ReplicaDir, _Mapping]] = ..., end: _Optional[_Union[ReplicaCommitEnd, _Mapping]] = ...) -> None: ...

class ReplicaCommitReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class MirrorSyncRequest(_message.Message):
    __slots__ = ("policy", "target", "wait")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    target: str
    wait: bool
    def __init__(self, policy: _Optional[str] = ..., target: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class MirrorProgress(_message.Message):
    __slots__ = ("target", "bytes", "files", "done", "version", "error")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    target: str
    bytes: int
    files: int
    done: bool
    version: int
    error: str
    def __init__(self, target: _Optional[str] = ..., bytes: _Optional[int] = ..., files: _Optional[int] = ..., done: _Optional[bool] = ..., version: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class MirrorVerifyRequest(_message.Message):
    __slots__ = ("policy", "repair", "deep")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    policy: str
    repair: bool
    deep: bool
    def __init__(self, policy: _Optional[str] = ..., repair: _Optional[bool] = ..., deep: _Optional[bool] = ...) -> None: ...

class MirrorVerifyReport(_message.Message):
    __slots__ = ("target", "version", "missing", "extra", "mismatched", "repaired", "error", "deep")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    target: str
    version: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    extra: _containers.RepeatedScalarFieldContainer[str]
    mismatched: _containers.RepeatedScalarFieldContainer[str]
    repaired: bool
    error: str
    deep: bool
    def __init__(self, target: _Optional[str] = ..., version: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ..., extra: _Optional[_Iterable[str]] = ..., mismatched: _Optional[_Iterable[str]] = ..., repaired: _Optional[bool] = ..., error: _Optional[str] = ..., deep: _Optional[bool] = ...) -> None: ...

class MirrorVerifyReply(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[MirrorVerifyReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[MirrorVerifyReport, _Mapping]]] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("volume", "to", "force", "reason")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    volume: str
    to: str
    force: bool
    reason: str
    def __init__(self, volume: _Optional[str] = ..., to: _Optional[str] = ..., force: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteReply(_message.Message):
    __slots__ = ("owner", "epoch", "version", "via")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    owner: str
    epoch: int
    version: int
    via: str
    def __init__(self, owner: _Optional[str] = ..., epoch: _Optional[int] = ..., version: _Optional[int] = ..., via: _Optional[str] = ...) -> None: ...

class HandoverRequest(_message.Message):
    __slots__ = ("volume", "to")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    volume: str
    to: str
    def __init__(self, volume: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class HydrateRequest(_message.Message):
    __slots__ = ("volume", "uri")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    volume: str
    uri: str
    def __init__(self, volume: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class HydrateReply(_message.Message):
    __slots__ = ("version", "files", "bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    files: int
    bytes: int
    def __init__(self, version: _Optional[int] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
