"""Property-based check of the whole HTTP API against its own OpenAPI schema (schemathesis).

Runs as an admin on a throwaway copy of the session's data dir, so generated
users, cameras and deletions touch nothing the other tests read. Every
operation gets a few generated requests; none may answer 5xx or a status its
``responses`` do not document.
"""

from __future__ import annotations

import pytest
import schemathesis
from api_fixtures import api, api_env, data_copy  # noqa: F401
from distributed_fixtures import settings_from
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def throwaway_app(api, tmp_path_factory):
    from camtrace.api.app import create_app

    copy = data_copy(api, tmp_path_factory.mktemp("schema-data"))
    app = create_app(settings_from({**api.env, "CAMTRACE_DATA_DIR": str(copy)}))
    yield app
    app.state.services.close()


def test_no_operation_answers_a_server_error_or_an_undocumented_status(throwaway_app, api):
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", throwaway_app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    statuses: dict[str, set[int]] = {}

    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call_and_validate(headers=headers, checks=[not_a_server_error, status_code_conformance])
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        check()
    # The generated requests reached the endpoints: some succeeded, some were refused as invalid.
    seen = set().union(*statuses.values())
    assert any(200 <= status < 300 for status in seen) and any(400 <= status < 500 for status in seen)
    assert len(statuses) == len(operations)


def test_options_and_undeclared_methods_answer_with_the_documented_methods(throwaway_app, api):
    """Every path of the schema: OPTIONS answers 204 and an undeclared method 405, both with an ``Allow``
    that lists exactly the methods the schema documents (what schemathesis' unsupported-method and
    allow-header checks look for); without credentials OPTIONS is 401 like everything else but the public routes."""
    from fastapi.testclient import TestClient

    schema = throwaway_app.openapi()
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    with TestClient(throwaway_app) as client:
        for path, operations in schema["paths"].items():
            url = path.replace("{crop_key}", "cam/x.jpg").replace("{", "").replace("}", "")
            declared = {method.upper() for method in operations}
            options = client.request("OPTIONS", url, headers=headers)
            assert options.status_code == 204, (path, options.text)
            assert set(options.headers["allow"].split(", ")) == declared | {"OPTIONS"}, path
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"} - declared):
                refused = client.request(method, url, headers=headers)
                assert refused.status_code == 405 and set(refused.headers["allow"].split(", ")) == declared | {"OPTIONS"}
            public = path in ("/healthz", "/api/login", "/api/logout")
            assert client.request("OPTIONS", url).status_code == (204 if public else 401), path
