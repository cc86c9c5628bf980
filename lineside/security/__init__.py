"""Broker-side security for Mosquitto 2.0: password hashes, TLS certificates, accounts and the ACL.

Everything lives under ``<data dir>/security/``:

- ``accounts.json``: every account (name, kind, line, can_ingest, password hash; never a password),
- ``passwd`` and ``acl``: Mosquitto's password file and ACL, rendered from ``accounts.json``,
- ``secrets/<account>.password``: the generated passwords of the services and of ``admin``,
- ``certs/``: the box's own CA and the broker's server certificate.

Secrets are generated here and written to files with mode 0600; none is ever put on a command
line (``mosquitto_passwd -b`` would show it in ``ps``). docs/security.md has the rule table.

The modules, lowest first: ``layout`` (where the files are, how they are written), ``passwords``
(Mosquitto's hashes), ``accounts`` (the account record and names), ``acl`` (the rule table),
``registry`` (``accounts.json`` and the files rendered from it), ``certs`` (CA and server
certificate), ``secure_broker`` (Mosquitto's secure configuration, start and reload).
"""
