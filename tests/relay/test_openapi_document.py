"""The OpenAPI document's structure: what its builders promise, checked on the built document.

cloud_relay/api/openapi.py writes each operation once and derives the rest (path parameters,
operation ids, the error responses a body or signing in implies). These tests pin those rules
and the document's coverage of the served routes without a frozen copy of the document, so
an edit that changes the API shows up in the schemathesis and response-validation tests,
and an edit that breaks a builder shows up here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import jsonschema
from aiohttp import web
from iob_protocol.account_api import REQUEST_MODELS, RESPONSE_MODELS

from cloud_relay.api import routes
from cloud_relay.api.common import request_schema
from cloud_relay.api.openapi import document

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of the document."""
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_documents_exactly_the_served_routes() -> None:
    defined = routes()
    assert all(isinstance(r, web.RouteDef) for r in defined)
    app = web.Application()
    app.add_routes(defined)
    # A route may narrow a parameter with a regular expression; its canonical form does not.
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert len(served) == len(defined)
    documented = {(method.upper(), path) for method, path, _ in operations()}
    assert documented == served


def test_document_is_plain_json() -> None:
    """No tuples or shared-object surprises: the served JSON reads back as the same dict."""
    doc = document()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["openapi"] == "3.1.0"


def test_path_parameters_are_the_paths_segments() -> None:
    for method, path, operation in operations():
        in_path = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        assert [p["name"] for p in in_path] == re.findall(r"\{(\w+)\}", path), (method, path)
        for parameter in in_path:
            assert parameter["required"] is True
            assert parameter["schema"]["type"] == "string"
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in {"path", "query"}
            if parameter["in"] == "query":
                assert parameter["required"] is False


def test_operation_ids_are_unique_and_follow_the_path() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    member = document()["paths"]["/v1/households/{household_id}/members/{member_id}"]
    assert member["patch"]["operationId"] == "patch_households_household_id_members_member_id"
    for operation_id in ids:
        assert re.fullmatch(r"(get|post|put|patch|delete)_[a-z0-9_]+", operation_id), operation_id


def test_every_operation_has_one_success_and_the_shared_errors() -> None:
    wording: defaultdict[str, set[str]] = defaultdict(set)
    for method, path, operation in operations():
        responses = operation["responses"]
        successes = [status for status in responses if status.startswith("2")]
        assert len(successes) == 1, (method, path)
        assert operation["summary"]
        assert len(operation["tags"]) == 1
        if path == "/openapi.json":
            continue
        assert "default" in responses, (method, path)
        errors = [status for status in responses if status not in successes]
        assert errors[-1] == "default"
        assert errors[:-1] == sorted(errors[:-1]), (method, path)
        for status in errors:
            response = responses[status]
            assert response["content"] == {"application/json": {"schema": ERROR_REF}}
            wording[status].add(response["description"])
    assert all(len(descriptions) == 1 for descriptions in wording.values()), wording
    assert {"400", "401", "403", "404", "409", "413", "415", "429", "503"} <= set(wording)


def test_a_body_implies_400_413_415_and_signing_in_implies_401() -> None:
    bodies = 0
    for method, path, operation in operations():
        responses = operation["responses"]
        if "requestBody" in operation:
            bodies += 1
            body = operation["requestBody"]
            assert body["required"] is True
            assert list(body["content"]) == ["application/json"]
            assert {"400", "413", "415"} <= set(responses), (method, path)
        if "security" not in operation:
            assert "401" in responses, (method, path)
        else:
            assert operation["security"] == []
    assert bodies > 0


def test_references_resolve_and_schemas_are_valid() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs
    assert refs <= set(schemas)
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        # Responses forbid unknown fields; FactoryRecord, a request item, is written open.
        if schema.get("type") == "object" and name != "FactoryRecord":
            assert schema["additionalProperties"] is False, name


def _fields(model: type) -> set[str]:
    return {field.name for field in dataclasses.fields(model)}


def test_body_schemas_are_the_wire_models() -> None:
    """components.schemas come from iob_protocol.account_api: one field, one property."""
    schemas = document()["components"]["schemas"]
    for model in (*RESPONSE_MODELS, *REQUEST_MODELS):
        name = "Error" if model.__name__ == "ErrorBody" else model.__name__
        assert set(schemas[name]["properties"]) == _fields(model), name
    for model in RESPONSE_MODELS:  # an answer always carries every field
        name = "Error" if model.__name__ == "ErrorBody" else model.__name__
        assert set(schemas[name]["required"]) == _fields(model), name


def test_every_request_body_is_a_wire_model_and_never_takes_null() -> None:
    bodies = {
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]
        for _method, _path, operation in operations()
        if "requestBody" in operation
    }
    assert bodies == {model.__name__ for model in REQUEST_MODELS}
    for method, path, operation in operations():
        if "requestBody" in operation:
            schema = request_schema(method.upper(), path)
            assert '"null"' not in json.dumps(schema), (method, path)
