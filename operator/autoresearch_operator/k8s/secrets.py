"""Where a Secret's value may go: only to hosts the operator's configuration or the Secret allows.

Whoever may create a ResearchOrg can point `spec.proposer.baseURL` or `spec.repo.url` at a host
they control and name any Secret of the namespace in `apiKeySecretRef` / `credentialsSecretRef`
(or rely on the operator's default LLM Secret). Sending the value there would make "create an
org" the same as "read the namespace's Secrets". So before a Secret's value is used, the host it
would be sent to must match AUTORESEARCH_SECRET_HOSTS (the chart's security.secretHosts plus its
llm.baseURL host) or the Secret's own annotation `autoresearch.dev/allowed-hosts`; otherwise the
operator refuses, naming the field, and never sends a request.

Patterns: `host` (any port), `host:port` (that port only) and `*.domain` (any subdomain, any
port); case does not matter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..spec import API_GROUP

ALLOWED_HOSTS_ANNOTATION = f"{API_GROUP}/allowed-hosts"
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"  # the openai client's own default
_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$|^\[[0-9a-f:.]+\](:[0-9]{1,5})?$"
)
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)")  # git@host:path


class SecretNotAllowed(Exception):
    """A Secret's value would go to a host nobody allowed; the message names the field."""


def check_host_pattern(pattern: str) -> str | None:
    """Why `pattern` is not a host pattern, or None when it is one."""
    if not _HOST.match(pattern.lower()):
        return "expected host, host:port or *.domain (no scheme, no path)"
    return None


def destination(url: str) -> tuple[str, int | None]:
    """(host, port) a URL sends to: http(s), ssh:// and scp-like git@host:path forms."""
    scp = _SCP_LIKE.match(url)
    if scp and "://" not in url:
        return scp.group(1).lower(), None
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname.lower(), port


def openai_endpoint(base_url: str | None) -> str:
    """The URL the openai client sends to: the org's baseURL, else its environment's default."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL


def host_allowed(host: str, port: int | None, patterns: Iterable[str]) -> bool:
    host = host.lower()
    for raw in patterns:
        pattern = raw.strip().lower()
        if not pattern:
            continue
        name, _, want_port = pattern.rpartition(":") if _has_port(pattern) else (pattern, "", "")
        if want_port and (port is None or int(want_port) != port):
            continue
        name = name.strip("[]")
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def _has_port(pattern: str) -> bool:
    if pattern.startswith("["):  # [::1]:8080
        return "]:" in pattern
    return pattern.count(":") == 1


def check_destination(
    url: str,
    *,
    field: str,
    secret: str,
    configured: Iterable[str],
    annotations: dict[str, str] | None,
) -> None:
    """Raise SecretNotAllowed unless the Secret `secret` may be sent to `url` (set by `field`)."""
    configured = tuple(configured)
    own = [h for h in ((annotations or {}).get(ALLOWED_HOSTS_ANNOTATION) or "").split(",") if h]
    try:
        host, port = destination(url)
    except ValueError as err:
        raise SecretNotAllowed(f"{field}: {err}; Secret {secret} is not sent") from None
    if host_allowed(host, port, configured) or host_allowed(host, port, own):
        return
    where = f"{host}:{port}" if port is not None else host
    raise SecretNotAllowed(
        f"{field}: the operator does not send Secret {secret} to {where}: that host is neither "
        f"in the operator's allowed hosts (AUTORESEARCH_SECRET_HOSTS, chart value "
        f"security.secretHosts: {', '.join(configured) or 'none'}) nor in the Secret's "
        f"annotation {ALLOWED_HOSTS_ANNOTATION}"
    )
