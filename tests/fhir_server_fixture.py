"""A real FHIR server for tests and benchmarks: ``sekmet serve`` on a free localhost port.

sekmet advertises every URL (status, files, token endpoint) from its configured ``base_url``,
so each server gets its own settings file whose base names the port it listens on, and its own
data directory. Inbound validation, the workflow simulator (which would answer a
MedicationRequest with new resources) and the traffic log are off: the server stores exactly
what is posted and stays fast.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ehrmamba.fhir.smart_auth import public_jwk

STATIC_TOKEN = "test-static-token"
SMART_CLIENT_ID = "ehrmamba-tests"
SEKMET = Path(sys.executable).with_name("sekmet")
# Loaded before the resources that point at them by conditional reference (Practitioner?identifier=)
_LOAD_FIRST = ("Organization", "Location", "Practitioner", "PractitionerRole", "Patient")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_private_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


class SekmetServer:
    """One ``sekmet serve`` process; ``stop()`` ends it (and only it)."""

    def __init__(self, workdir: Path, *, token_lifetime: int = 3600, smart_key: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.token = STATIC_TOKEN
        self.smart_key = smart_key
        smart_clients = []
        if smart_key is not None:
            smart_clients.append(
                {
                    "client_id": SMART_CLIENT_ID,
                    "jwks": {"keys": [public_jwk(smart_key.read_bytes())]},
                    "scopes": "system/*.read",
                }
            )
        settings = {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet.pem"),
            "validation": {"inbound": "off"},
            "simulator": {"enabled": False},
            "log_inbound": False,
            "server_auth": {
                "types": ["bearer", "smart"],
                "tokens": [STATIC_TOKEN],
                "smart_clients": smart_clients,
                "token_lifetime": token_lifetime,
            },
        }
        self.settings_path = self.workdir / "settings.yaml"
        self.settings_path.write_text(yaml.safe_dump(settings))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> SekmetServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(SEKMET), "serve", "--config", str(self.settings_path)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SEKMET_CONFIG": str(self.settings_path)},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sekmet did not answer within {timeout}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    # ------------------------------------------------------------------ loading data

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/fhir+json",
            },
            timeout=300,
        )

    def post_transaction(self, bundle: dict) -> dict:
        with self.client() as http:
            response = http.post("", content=json.dumps(bundle))
        if response.status_code != 200:
            raise RuntimeError(f"transaction failed: {response.status_code} {response.text[:500]}")
        return response.json()

    def put_resources(self, resources: list[dict]) -> dict:
        """Create or update resources with their own ids, in one transaction."""
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ]
        return self.post_transaction(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )

    def load_ndjson_dir(self, directory: Path, batch: int = 1000) -> Counter[str]:
        """PUT every resource of a Bulk NDJSON directory (ids kept), in transactions."""
        files = sorted(
            (p for p in directory.glob("*.ndjson*") if not p.name.startswith("log.")),
            key=lambda p: (_load_rank(p.name.split(".")[0]), p.name),
        )
        loaded: Counter[str] = Counter()
        for path in files:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt") as fh:
                resources = [json.loads(line) for line in fh if line.strip()]
            for i in range(0, len(resources), batch):
                self.put_resources(resources[i : i + batch])
            loaded.update(r["resourceType"] for r in resources)
        return loaded

    def load_bundles(self, paths: Iterable[Path]) -> Counter[str]:
        """POST Synthea transaction Bundles as they are; returns the resources they hold."""
        loaded: Counter[str] = Counter()
        for path in paths:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as fh:
                bundle = json.loads(fh.read())
            self.post_transaction(bundle)
            loaded.update(e["resource"]["resourceType"] for e in bundle.get("entry", []))
        return loaded


def _load_rank(resource_type: str) -> int:
    return _LOAD_FIRST.index(resource_type) if resource_type in _LOAD_FIRST else len(_LOAD_FIRST)


def synthea_files(synthea_dir: Path, patients: int) -> list[Path]:
    """The two shared organisation/practitioner Bundles first, then ``patients`` patients."""
    info = sorted(synthea_dir.glob("hospitalInformation*")) + sorted(
        synthea_dir.glob("practitionerInformation*")
    )
    people = sorted(p for p in synthea_dir.glob("*.json.gz") if p not in info)
    return info + people[:patients]


@contextmanager
def running_server(workdir: Path, **kwargs) -> Iterator[SekmetServer]:
    server = SekmetServer(workdir, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
