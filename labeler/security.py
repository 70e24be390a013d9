"""Security: CSRF, security headers (CSP), login rate limiting (being built)."""


def init_app(app):
    pass
