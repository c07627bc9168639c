"""The python callable of the original README's first example."""

import urllib.error
import urllib.request


def check_api_status(api_endpoint: str, timeout: float = 10.0) -> int:
    """GET api_endpoint; print the status; raise if the API does not answer 2xx or 3xx."""
    try:
        with urllib.request.urlopen(api_endpoint, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    print(f"{api_endpoint} -> {status}")
    if status >= 400:
        raise RuntimeError(f"{api_endpoint} answered {status}")
    return status
