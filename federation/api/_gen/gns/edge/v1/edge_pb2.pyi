from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("site", "token", "api_version", "csr_pem")
    SITE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    site: str
    token: str
    api_version: str
    csr_pem: bytes
    def __init__(self, site: _Optional[str] = ..., token: _Optional[str] = ..., api_version: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("site", "credential", "credential_expires_at", "ca_sha256", "hub", "cert_pem", "ca_pem", "cert_expires_at")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CA_SHA256_FIELD_NUMBER: _ClassVar[int]
    HUB_FIELD_NUMBER: _ClassVar[int]
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    site: str
    credential: str
    credential_expires_at: float
    ca_sha256: str
    hub: str
    cert_pem: bytes
    ca_pem: bytes
    cert_expires_at: float
    def __init__(self, site: _Optional[str] = ..., credential: _Optional[str] = ..., credential_expires_at: _Optional[float] = ..., ca_sha256: _Optional[str] = ..., hub: _Optional[str] = ..., cert_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ..., cert_expires_at: _Optional[float] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("site", "credential", "heartbeat_s", "api_version", "listen")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    site: str
    credential: str
    heartbeat_s: float
    api_version: str
    listen: str
    def __init__(self, site: _Optional[str] = ..., credential: _Optional[str] = ..., heartbeat_s: _Optional[float] = ..., api_version: _Optional[str] = ..., listen: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("hub", "view_json", "credential_expires_at")
    HUB_FIELD_NUMBER: _ClassVar[int]
    VIEW_JSON_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    hub: str
    view_json: bytes
    credential_expires_at: float
    def __init__(self, hub: _Optional[str] = ..., view_json: _Optional[bytes] = ..., credential_expires_at: _Optional[float] = ...) -> None: ...

class VolumeReport(_message.Message):
    __slots__ = ("volume", "version", "epoch")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    volume: str
    version: int
    epoch: int
    def __init__(self, volume: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "backlog_versions", "backlog_bytes", "volumes", "mirror_status_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    MIRROR_STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    backlog_versions: int
    backlog_bytes: int
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeReport]
    mirror_status_json: bytes
    def __init__(self, seq: _Optional[int] = ..., backlog_versions: _Optional[int] = ..., backlog_bytes: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[VolumeReport, _Mapping]]] = ..., mirror_status_json: _Optional[bytes] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq", "view_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VIEW_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    view_json: bytes
    def __init__(self, seq: _Optional[int] = ..., view_json: _Optional[bytes] = ...) -> None: ...

class Renew(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class Renewed(_message.Message):
    __slots__ = ("credential", "credential_expires_at", "cert_pem", "ca_pem", "cert_expires_at")
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    credential: str
    credential_expires_at: float
    cert_pem: bytes
    ca_pem: bytes
    cert_expires_at: float
    def __init__(self, credential: _Optional[str] = ..., credential_expires_at: _Optional[float] = ..., cert_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ..., cert_expires_at: _Optional[float] = ...) -> None: ...

class CallStart(_message.Message):
    __slots__ = ("method", "metadata", "cluster", "timeout_s", "bulk")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    BULK_FIELD_NUMBER: _ClassVar[int]
    method: str
    metadata: _containers.RepeatedCompositeFieldContainer[KeyValue]
    cluster: str
    timeout_s: float
    bulk: bool
    def __init__(self, method: _Optional[str] = ..., metadata: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., cluster: _Optional[str] = ..., timeout_s: _Optional[float] = ..., bulk: _Optional[bool] = ...) -> None: ...

class CallEnd(_message.Message):
    __slots__ = ("code", "details", "trailers")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: str
    trailers: _containers.RepeatedCompositeFieldContainer[KeyValue]
    def __init__(self, code: _Optional[int] = ..., details: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("call", "hello", "welcome", "heartbeat", "ack", "start", "data", "end", "cancel", "renew", "renewed")
    CALL_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    call: int
    hello: Hello
    welcome: Welcome
    heartbeat: Heartbeat
    ack: HeartbeatAck
    start: CallStart
    data: bytes
    end: CallEnd
    cancel: bool
    renew: Renew
    renewed: Renewed
    def __init__(self, call: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., start: _Optional[_Union[CallStart, _Mapping]] = ..., data: _Optional[bytes] = ..., end: _Optional[_Union[CallEnd, _Mapping]] = ..., cancel: _Optional[bool] = ..., renew: _Optional[_Union[Renew, _Mapping]] = ..., renewed: _Optional[_Union[Renewed, _Mapping]] = ...) -> None: ...
