"""Messages people read: email templates rendered per locale, JIRA wiki markup made
safe text and HTML, sample data for previews and checks.
"""
