from webhooks.signature import sign, verify, verify_token

BODY = b'{"webhookEvent":"jira:issue_updated"}'


def test_a_jira_cloud_signature_verifies():
    assert verify("s3cret", BODY, sign("s3cret", BODY)) is None


def test_uppercase_hex_and_method_are_accepted():
    header = sign("s3cret", BODY)
    assert verify("s3cret", BODY, "SHA256=" + header.split("=", 1)[1].upper()) is None


def test_a_changed_body_fails():
    assert verify("s3cret", BODY + b" ", sign("s3cret", BODY)) == "signature does not match the body"


def test_a_wrong_secret_fails():
    assert verify("other", BODY, sign("s3cret", BODY)) == "signature does not match the body"


def test_missing_or_malformed_headers_say_why():
    assert verify("s3cret", BODY, None) == "missing X-Hub-Signature header"
    assert "sha256=" in verify("s3cret", BODY, "sha1=abcdef")
    assert "sha256=" in verify("s3cret", BODY, "deadbeef")


def test_a_non_ascii_or_non_hex_digest_is_refused_with_a_reason():
    for header in ("sha256=é", "sha256=\u00e9" * 64, "sha256=" + "g" * 64, "sha256=\u212a" * 64):
        assert verify("s3cret", BODY, header) == "X-Hub-Signature must be sha256=<hex digest>"


def test_a_url_token_verifies_only_when_equal():
    assert verify_token("t0ken", "t0ken") is None
    assert verify_token("t0ken", "t0ken2") == "token does not match"
    assert verify_token("t0ken", "é") == "token does not match"
    assert "?token=" in verify_token("t0ken", None) and "?token=" in verify_token("t0ken", "")
