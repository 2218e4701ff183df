"""A bounded fuzz run: inputs generated from the OpenAPI schema, valid and broken on purpose, sent
to the real app with real encoders and a real Redis. Any 5xx fails."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from backend.config import Settings
from backend.runtime import Runtime
from backend.web.app import create_app

EXAMPLES = 60  # per endpoint: a bounded run (under a minute)


def test_no_input_makes_a_server_error(redis_url, r, encoders, demo_dir, tmp_path):
    app_settings = Settings(redis_url=redis_url, media_roots=f"{demo_dir}:{tmp_path}", predict_budget_s=5.0)
    app = create_app(app_settings, Runtime.build(app_settings, r, encoders))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/setup", "/predict", "/webhook", "/job_status"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def no_5xx(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        no_5xx()
