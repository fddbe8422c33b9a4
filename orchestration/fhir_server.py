"""The FHIR server the platform pulls from, as a Dagster resource configured from the env.

Every field may stay empty: it then falls back to the ``EHRMAMBA_FHIR_SERVER_*`` variables read
by :class:`ehrmamba.settings.Settings`, so secrets (a token, a key path) come from the
environment of the code location and never sit in run config.
"""

import dagster as dg

from ehrmamba.fhir.bulk_export import BulkExportClient, RetryPolicy
from ehrmamba.fhir.smart_auth import make_auth
from ehrmamba.settings import Settings


class FhirServerResource(dg.ConfigurableResource):
    """A FHIR server with Bulk Data ``$export``: static bearer token or SMART Backend Services."""

    url: str = ""
    token: str = ""
    client_id: str = ""
    private_key_path: str = ""
    token_url: str = ""
    scope: str = ""
    workers: int = 4
    """Files downloaded at a time."""

    def base_url(self) -> str:
        url = self.url or Settings.from_env().fhir_server_url
        if not url:
            raise ValueError("no FHIR server: set EHRMAMBA_FHIR_SERVER_URL or the resource's url")
        return url

    def client(self, retry: RetryPolicy | None = None) -> BulkExportClient:
        """A Bulk Data client for the server (close it, or use it in a ``with``)."""
        env = Settings.from_env()
        url = self.base_url()
        auth = make_auth(
            url,
            token=self.token or env.fhir_server_token,
            client_id=self.client_id or env.fhir_server_client_id,
            private_key_path=self.private_key_path or env.fhir_server_private_key,
            token_url=self.token_url or env.fhir_server_token_url,
            scope=self.scope or env.fhir_server_scope,
        )
        return BulkExportClient(url, auth, retry=retry, workers=self.workers)
