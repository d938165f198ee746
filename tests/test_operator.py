"""The operator's email preview page, behind HTTP Basic auth."""

import base64

import pytest

from webhooks import create_app
from workers.rendering.emails import TEMPLATE_NAMES


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def client(settings):
    return create_app(settings.replace(operator_password="op-secret")).test_client()


def test_closed_without_a_password(settings):
    response = create_app(settings).test_client().get("/operator/emails")
    assert response.status_code == 403
    assert b"set OPERATOR_PASSWORD" in response.data


@pytest.mark.parametrize("headers", [{}, basic("operator", "wrong"), basic("admin", "op-secret")])
def test_wrong_or_missing_credentials_get_401(client, headers):
    response = client.get("/operator/emails", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_every_template_in_every_locale_side_by_side(client):
    response = client.get("/operator/emails", headers=basic("operator", "op-secret"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for name in TEMPLATE_NAMES:
        assert f'id="{name}"' in page
        assert page.count(f'title="{name} en"') == 1 and page.count(f'title="{name} fr"') == 1
    assert page.count("<iframe") == 2 * len(TEMPLATE_NAMES)
    assert "<script>alert(1)</script>" not in page       # the sample's hostile summary stays escaped
