"""Property-based fuzzing of the whole OpenAPI (schemathesis) with an admin token:
whatever a request holds, the server answers it without a server error (5xx) and
with a body that keeps to its own schema."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from stasis.api.app import create_app
from stasis.api.context import ApiContext

# Per operation. PostgreSQL runs fewer: what differs there is the database's own
# refusals (integer ranges, text encodings), which the first examples reach already.
EXAMPLES = {"sqlite": 15, "postgresql": 10}


@pytest.mark.slow
def test_no_request_makes_a_server_error(api_ctx: ApiContext,
                                         client: Callable[..., TestClient]) -> None:
    token = client("admin").headers["Authorization"]
    database = api_ctx.catalog.url.get_backend_name()
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(api_ctx))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES[database], deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            try:
                response = case.call(headers={"Authorization": token})
            except Exception as e:  # the app raised: what a real server answers with a 500
                failures.append(f"{case.method} {case.formatted_path} raised {e!r}"[:600])
                return
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {response.text[:300]}")
                return
            try:
                case.validate_response(
                    response, checks=[schemathesis.checks.response_schema_conformance])
            except Exception as e:  # a schemathesis FailureGroup: the body breaks the schema
                failures.append(f"{case.method} {case.formatted_path}: {e}"[:600])

        fuzz()
    assert operations > 0
    assert not failures, "\n".join(sorted(set(failures))[:20])
