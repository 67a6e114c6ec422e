"""fsspec filesystem for ``gns://`` URLs, so any fsspec-aware tool reads global paths.

``pandas.read_csv("gns:///health/sensors/day.csv")`` works once gns is installed: the
``fsspec.specs`` entry point registers this class. Every call goes through
:class:`federation.client.Client` (the same routing as the CLI); nothing here talks to etcd
or a controller directly.
"""
from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from namespace.errors import FileNotFound, NotFound


class GnsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = "gns"
    root_marker = "/"

    def __init__(self, etcd: str | None = None, via: str | None = None, tls_dir: str | None = None,
                 consistency: str = "owner", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client_args = {"via": via, "tls_dir": tls_dir, "consistency": consistency}
        self._etcd = etcd
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from federation.client import Client

            self._client = Client(self._etcd, **self._client_args)
        return self._client

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("gns://"):
            path = path[len("gns://"):]
        return "/" + path.lstrip("/") if path else "/"

    def _entry(self, base: str, e: dict[str, Any]) -> dict[str, Any]:
        name = base.rstrip("/") + "/" + e["name"] if e["name"] else base
        return {"name": name, "size": e["size"], "type": "directory" if e["type"] == "dir" else "file"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        try:
            entries = self.client.ls(path)
        except NotFound as exc:
            raise FileNotFoundError(path) from exc
        info = self.info(path)
        if info["type"] == "file":
            out = [info]
        else:
            out = [self._entry(path, e) for e in entries]
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        try:
            st = self.client.stat(path)
        except NotFound as exc:
            raise FileNotFoundError(path) from exc
        kind = "directory" if st["type"] == "dir" else "file"
        return {"name": path, "size": st["size"], "type": kind, "mtime": st.get("mtime"),
                "sha256": st.get("sha256"), "version": st.get("version")}

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        start = start or 0
        length = 0 if end is None else max(0, end - start)
        if end is not None and length == 0:
            return b""
        try:
            return b"".join(self.client.read_chunks(path, offset=start, length=length))
        except FileNotFound as exc:
            raise FileNotFoundError(path) from exc

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.client.put(value, self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        self.client.rm(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are implicit in gns: nothing to create."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are implicit in gns: nothing to create."""

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> Any:
        return GnsFile(self, path, mode, block_size=block_size or 4 * 2**20,
                       autocommit=autocommit, cache_options=cache_options, **kwargs)


class GnsFile(AbstractBufferedFile):  # type: ignore[misc]
    """Reads fetch byte ranges; writes stream into one Write call, committed on close."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start, end)  # type: ignore[no-any-return]

    def _initiate_upload(self) -> None:
        self._writer = self.fs.client.open(self.path, "wb")

    def _upload_chunk(self, final: bool = False) -> bool:
        self._writer.write(self.buffer.getvalue())
        if final:
            self._writer.close()
        return True
