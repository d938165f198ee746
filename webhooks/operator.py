"""Operator pages, behind HTTP Basic auth (OPERATOR_USER / OPERATOR_PASSWORD).

Without OPERATOR_PASSWORD the pages are closed (403), never open by default.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, render_template, request

from workers.emails import TEMPLATE_NAMES, Renderer
from workers.rules import load_rules
from workers.samples import render_samples

bp = Blueprint("operator", __name__, url_prefix="/operator")


@bp.before_request
def require_operator():
    return operator_denied()


def operator_denied() -> Response | None:
    """The answer refusing a request without the operator's credentials, or None if it has them."""
    settings = current_app.extensions["relance"].settings
    if not settings.operator_password:
        return Response("Operator pages are closed: set OPERATOR_PASSWORD to open them.\n", 403,
                        mimetype="text/plain")
    auth = request.authorization
    if not (auth and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), settings.operator_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), settings.reveal("operator_password").encode())):
        return Response("Operator login required.\n", 401, {"WWW-Authenticate": 'Basic realm="relance operator"'},
                        mimetype="text/plain")
    return None


@bp.get("/emails")
def emails():
    """Every email template in every locale, side by side, as customers would see them (sample data)."""
    settings = current_app.extensions["relance"].settings
    rules = load_rules(settings.rules_file, settings.templates_dir)
    renderer = Renderer(settings.templates_dir, rules.locale)
    locales = renderer.locales()
    rows = {}
    for name, locale, mail in render_samples(rules, renderer, TEMPLATE_NAMES, locales, settings.jira_base_url):
        rows.setdefault(name, []).append((locale, mail))
    used = {a.email.template for r in rules.rules for a in r.do if a.email}
    return render_template("operator/emails.html", rows=rows, locales=locales, used=used)
