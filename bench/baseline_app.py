"""The baseline for webhook acceptance: a bare Flask endpoint that reads the body and answers 202."""

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/jira")
def receive():
    request.get_data()
    return {"status": "queued"}, 202
