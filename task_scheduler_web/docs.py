"""The /api/docs page: the OpenAPI document as plain HTML, no script and no external asset.

The core keeps the route (``GET /api/docs`` in its API_ROUTES) and hands us the document; the
page is rendered by ``views/api_docs.tpl`` in the reader's language (the GUI's language cookie,
else Accept-Language). The descriptions inside the document stay as the API writes them.
"""
from __future__ import annotations

import functools
import json
import os
from datetime import UTC

import bottle

from .i18n import LANG_COOKIE, Locale, choose_language

VIEWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "views")


def api_docs_html(document_json: str, secured: bool) -> str:
    """The page for the current request; built once per document, token setting and language."""
    request = bottle.request
    lang = choose_language(request.query.get("lang"), request.get_cookie(LANG_COOKIE),
                           request.headers.get("Accept-Language"))
    return _page(document_json, secured, lang, _base_url(request))


def _base_url(request) -> str:
    """The address this page was asked at (the guard has checked its Host): what the reader's
    curl reaches, whatever port or name the service listens on."""
    parts = request.urlparts
    return f"{parts.scheme}://{parts.netloc}{request.script_name.rstrip('/')}"


@functools.lru_cache(maxsize=8)
def _page(document_json: str, secured: bool, lang: str, base_url: str) -> str:
    doc = json.loads(document_json)
    locale = Locale(lang, UTC, UTC)
    ops = [_operation(path, method, op, secured, locale, base_url)
           for path, item in doc["paths"].items() for method, op in item.items()]
    schemas = [_schema(name, schema, locale) for name, schema in
               doc["components"]["schemas"].items()]
    about = [p.replace("**", "").replace("`", "") for p in doc["info"]["description"].split("\n\n")]
    return bottle.template("api_docs", template_lookup=[VIEWS], info=doc["info"], about=about,
                           ops=ops, schemas=schemas, t=locale.t, lang=lang)


def _operation(path: str, method: str, op: dict, secured: bool, locale: Locale,
               base_url: str) -> dict:
    error = {"$ref": "#/components/schemas/ApiError"}
    return {
        "id": op["operationId"], "method": method.upper(), "path": path,
        "summary": op["summary"], "description": op.get("description", ""),
        "parameters": [{"name": p["name"], "in": p["in"], "type": type_parts(p["schema"], locale),
                        "about": p.get("description", "")} for p in op["parameters"]],
        "body": type_parts(op["requestBody"]["content"]["application/json"]["schema"], locale)
        if "requestBody" in op else None,
        "answers": [{"code": code, "about": r["description"],
                     "types": [type_parts(c["schema"], locale)
                               for c in r.get("content", {}).values()]}
                    for code, r in op["responses"].items() if code < "400"],
        "errors": [{"code": code, "about": r["description"],
                    "types": [type_parts(c["schema"], locale) for c in r["content"].values()
                              if c["schema"] != error]}
                   for code, r in op["responses"].items() if code >= "400"],
        "error_type": type_parts(error, locale),
        "curl": _curl(base_url + path, method, op, secured),
    }


def _schema(name: str, schema: dict, locale: Locale) -> dict:
    required = set(schema.get("required", []))
    return {"name": name, "description": schema.get("description", ""),
            "fields": [{"name": field, "type": type_parts(prop, locale),
                        "required": field in required, "about": str(prop.get("description", ""))}
                       for field, prop in (schema.get("properties") or {}).items()],
            "json": json.dumps(schema, indent=2)}


def type_parts(schema: dict, locale: Locale) -> list[dict]:
    """A short readable type as pieces for the template: text, and links to schemas."""
    if "$ref" in schema:
        return [{"ref": schema["$ref"].rpartition("/")[2]}]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts: list[dict] = []
            for index, sub in enumerate(schema[key]):
                parts += ([{"text": " | "}] if index else []) + type_parts(sub, locale)
            return parts
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return [{"text": " | ".join(json.dumps(v, ensure_ascii=False) for v in values)}]
    kind = schema.get("type", "any")
    if kind == "array":
        return [{"text": locale.t("docs.array_of") + " "}] + type_parts(schema.get("items", {}),
                                                                         locale)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return [{"text": locale.t("docs.object_of") + " "}] + type_parts(
            schema["additionalProperties"], locale)
    extra = [str(schema["format"])] if "format" in schema else []
    extra += [f"{word} {schema[key]}" for key, word in (
        ("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
        ("pattern", locale.t("docs.matching"))) if key in schema]
    return [{"text": f"{kind} ({', '.join(extra)})" if extra else str(kind)}]


def _curl(url: str, method: str, op: dict, secured: bool) -> str:
    parts = ["curl -s"] + ([f"-X {method.upper()}"] if method != "get" else [])
    if secured and op.get("security") != []:
        parts.append("-H 'Authorization: Bearer $TS_API_TOKEN'")
    if "requestBody" in op:
        parts.append("-H 'Content-Type: application/json' -d @job.json")
    return " ".join(parts + [url])
