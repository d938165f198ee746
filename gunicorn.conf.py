"""Gunicorn settings of the web process (the Procfile's ``gunicorn -c gunicorn.conf.py``)."""

import sys

# Paths without their query string: a webhook URL's ?token= is a credential, kept out of the access log.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def on_starting(server):
    """Refuse to start, with the reason and no traceback, on configuration the app refuses.

    Checked once in the master: else each worker would fail to boot with a traceback of its own.
    """
    from webhooks import check_config
    from workers.exceptions import ConfigError, RulesError
    from workers.settings import Settings
    try:
        check_config(Settings.from_env())
    except ConfigError as e:
        sys.exit(f"relance: configuration error: {e}")
    except RulesError as e:
        sys.exit(str(e))
