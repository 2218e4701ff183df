"""The Label Studio client's own logic that needs no server (the rest runs against a real one in e2e)."""

from label_studio_sdk.core.api_error import ApiError

from backend.labelstudio.client import _describe


def test_a_label_studio_error_is_described_without_its_response_headers():
    error = ApiError(status_code=404, headers={"set-cookie": "sessionid=s3cret"}, body={"detail": "Not found."})
    said = _describe(error)
    assert said == "HTTP 404: {'detail': 'Not found.'}" and "s3cret" not in said
    assert _describe(ValueError("boom")) == "ValueError: boom"
