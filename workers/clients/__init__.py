"""The outside services, behind small clients: JIRA's REST API, mail (SendGrid or the
local outbox), chat webhooks.
"""
