"""The OpenAPI schema documents every answer an endpoint can give (drf-spectacular
postprocessing hook).

Views document their own successes and particular errors; this adds, to every operation
that does not document them itself, the answers every endpoint can give in the API's error
shape: 400 (bad input or body), 401 (no or wrong token, where a token is needed), 403, 404
(unknown path or object), 405, 413 (body over the limit, where there is a body), 415, 429,
and 503 (the database unreachable, with Retry-After).
"""

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "A code, e.g. invalid, not_found, unavailable."},
        "detail": {"type": "string", "description": "A sentence naming the problem."},
        "fields": {"type": "object", "additionalProperties": True,
                   "description": "Field name -> messages, for invalid input."},
    },
    "additionalProperties": True,
}

_COMMON = {
    "400": "Bad input: a malformed, too deep or too large body, a NUL byte or lone surrogate, or an invalid field.",
    "403": "Not allowed for this token.",
    "404": "No such path or object (for this custodian).",
    "405": "Method not allowed on this path.",
    "429": "Too many requests.",
    "503": "The database is unreachable; retry after the Retry-After header's seconds.",
}


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ApiError", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/ApiError"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            wanted = dict(_COMMON)
            if operation.get("security") != [{}] and operation.get("security") is not None:
                wanted["401"] = "Missing or unknown bearer token."
            if "requestBody" in operation:
                wanted["413"] = "The body is over the size limit."
                wanted["415"] = "The body is not application/json."
            for status, description in wanted.items():
                if status in responses:
                    answer = responses[status]
                    answer.setdefault("content", {"application/json": {"schema": ref}})
                    continue
                responses[status] = {"description": description, "content": {"application/json": {"schema": ref}}}
            if "503" in responses:
                responses["503"].setdefault("headers", {"Retry-After": {"schema": {"type": "integer"}}})
    return result
