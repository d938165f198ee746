"""Local HTTP stand-ins for the external APIs relance talks to (real servers, for tests)."""

from .jira import JiraStandIn
from .sendgrid import SendGridStandIn

__all__ = ["JiraStandIn", "SendGridStandIn"]
