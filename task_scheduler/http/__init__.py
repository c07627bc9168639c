"""HTTP: the JSON API, its guard, the OpenAPI document and the server."""
