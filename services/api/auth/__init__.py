"""People, sign-in and sessions for the dashboard.

- ``schema``: the tables (users, sign-in links, sessions, failed attempts), from ``db.migrate``;
- ``passwords``: argon2id hashing (argon2-cffi), off the event loop, a few at a time;
- ``users``: the ``api.users`` store and its checks (emails, roles);
- ``links``: one-time sign-in links (only their SHA-256 stored; they expire, they work once);
- ``sessions``: the session cookie (only its SHA-256 stored), its CSRF token, expiry and idle
  timeout, and what a request from a browser must show before it may change anything;
- ``ratelimit``: failed sign-ins per email and per client address, across API instances.

Nothing here imports ``web`` or the routes (``web.auth_middleware`` imports this package).
"""
