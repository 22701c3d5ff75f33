#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: preflight contributors
# Apache License 2.0
"""Ansible module: list preflight maintenance leases, end them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: preflight_maintenance
short_description: List or end preflight maintenance leases
description:
  - Lists the leases in force (C(GET /v1/maintenance)), always.
  - With O(end), ends those leases (C(DELETE /v1/maintenance/{id})); with
    O(end_pipeline), every lease of that pipeline. A lease already gone
    (ended or expired) is not an error; the task is unchanged for it.
  - Ending a lease does not put its nodes back in the gate's ready list at
    once. Each has the aggregator's C(maintenance_grace) to be back and go,
    and counts against the plan's C(max_unavailable) until it is. One not
    back by then is MAINTENANCE_OVERRUN, which the gate names.
  - In check mode nothing is ended; RV(ended) lists what would be.
  - Fails when no aggregator answers (the replicas are tried in order as by
    M(preflight_gate)), or on a 4xx other than 404 on an end.
options:
  servers:
    description: Aggregator base URLs (the replicas), tried in order; comma lists allowed.
    type: list
    elements: str
    required: true
  end:
    description: Lease ids to end.
    type: list
    elements: int
    default: []
  end_pipeline:
    description: End every lease in force whose pipeline is this name.
    type: str
  request_timeout:
    description: Seconds for one HTTP request.
    type: int
    default: 10
  ca:
    description: PEM file of the CA that signed the aggregators' certificates.
    type: path
  cert:
    description: PEM client certificate to present (mutual TLS). Needs O(key).
    type: path
  key:
    description: PEM private key of O(cert).
    type: path
  token_file:
    description:
      - File holding a bearer token (an operator identity to end leases).
        Sent only to C(https://) servers and to loopback addresses.
    type: path
author:
  - preflight contributors
"""

EXAMPLES = r"""
- name: End the lease the plan took
  preflight_maintenance:
    servers: ["https://agg1.example.net:9100", "https://agg2.example.net:9100"]
    end: ["{{ plan.lease.id }}"]
    token_file: /etc/preflight/operator.token

- name: End whatever this pipeline still holds (a rescue block)
  preflight_maintenance:
    servers: ["https://agg1.example.net:9100"]
    end_pipeline: tripleo-update-42
    token_file: /etc/preflight/operator.token

- name: Which nodes are out for maintenance
  preflight_maintenance:
    servers: ["https://agg1.example.net:9100"]
  register: maintenance
"""

RETURN = r"""
leases:
  description:
    - The leases in force after the task, oldest first (C(id), C(nodes),
      C(pipeline), C(reason), C(author), C(created_at), C(expires_at)).
  type: list
  elements: dict
  returned: always
ended:
  description: Ids of the leases this task ended (or would, in check mode).
  type: list
  elements: int
  returned: always
server:
  description: The aggregator that answered last (empty when none did).
  type: str
  returned: always
unanswered:
  description: Aggregators skipped, each with why.
  type: list
  elements: str
  returned: always
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import urlsplit
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError

# At most 1,000 nodes a lease, each lease well under this; a longer
# answer is not a lease list.
MAX_BODY = 64 * 1024 * 1024


def split_servers(servers):
    """Entries as given, comma lists expanded, blanks dropped."""
    return [s.strip() for entry in servers for s in entry.split(",") if s.strip()]


def in_clear(server):
    """A server a token would reach unencrypted over the network."""
    u = urlsplit(server)
    host = (u.hostname or "").lower()
    loopback = host == "localhost" or host == "::1" or host.startswith("127.")
    return u.scheme != "https" and not loopback


def call(servers, method, path, p, tls):
    """Returns (status, parsed body or None, server, errors, refusal): the
    first server that answers with something other than a 5xx. A 4xx is
    returned as the status with its message in `refusal`."""
    errors = []
    headers = {"Authorization": "Bearer %s" % tls["token"]} if tls["token"] else None
    for server in servers:
        try:
            resp = open_url(
                server.rstrip("/") + path, method=method, timeout=p["request_timeout"], headers=headers,
                validate_certs=True, ca_path=tls["ca"], client_cert=tls["cert"], client_key=tls["key"],
            )
            status, body = resp.getcode(), resp.read(MAX_BODY + 1)
        except HTTPError as e:
            status, body = e.code, e.read(MAX_BODY + 1)
        except Exception as e:  # pylint: disable=broad-except
            errors.append("%s: %s" % (server, e))
            continue
        if len(body) > MAX_BODY:
            errors.append("%s: answer over %d bytes" % (server, MAX_BODY))
            continue
        if status >= 500:
            errors.append("%s: HTTP %d" % (server, status))
            continue
        if 400 <= status < 500:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = body[:1024]
            return status, None, server, errors, "%s: HTTP %d: %s" % (server, status, message)
        if not body:
            return status, None, server, errors, None
        try:
            return status, json.loads(body), server, errors, None
        except ValueError as e:
            errors.append("%s: unreadable answer: %s" % (server, e))
    return None, None, "", errors, None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            servers=dict(type="list", elements="str", required=True),
            end=dict(type="list", elements="int", default=[]),
            end_pipeline=dict(type="str"),
            request_timeout=dict(type="int", default=10),
            ca=dict(type="path"),
            cert=dict(type="path"),
            key=dict(type="path", no_log=False),
            token_file=dict(type="path"),
        ),
        required_together=[("cert", "key")],
        supports_check_mode=True,
    )
    p = module.params
    empty = dict(leases=[], ended=[], server="", unanswered=[])
    servers = split_servers(p["servers"])
    if not servers:
        module.fail_json(msg="preflight maintenance: servers is empty", **empty)
    for f in ("ca", "cert", "key", "token_file"):
        if p[f] is not None and not os.access(p[f], os.R_OK):
            module.fail_json(msg="preflight maintenance: %s %s cannot be read" % (f, p[f]), **empty)
    token = None
    if p["token_file"]:
        with open(p["token_file"]) as f:
            token = f.read().strip()
        if not token:
            module.fail_json(msg="preflight maintenance: token_file %s is empty" % p["token_file"], **empty)
        clear = [s for s in servers if in_clear(s)]
        if clear:
            module.fail_json(msg="preflight maintenance: would send the token in clear to %s; use https://" % ", ".join(clear), **empty)
    tls = dict(ca=p["ca"], cert=p["cert"], key=p["key"], token=token)
    unanswered = []

    def leases():
        status, body, server, errors, refusal = call(servers, "GET", "/v1/maintenance", p, tls)
        unanswered.extend(errors)
        if refusal or status is None or not isinstance(body, list) or not all(isinstance(x, dict) for x in body):
            why = refusal or ("no aggregator answered: %s" % "; ".join(errors) if status is None else "%s: not a list of leases" % server)
            module.fail_json(msg="preflight maintenance: cannot list the leases: %s" % why, **dict(empty, unanswered=unanswered))
        return body, server

    in_force, server = leases()
    wanted = list(p["end"])
    if p["end_pipeline"]:
        wanted += [x.get("id") for x in in_force if x.get("pipeline") == p["end_pipeline"] and x.get("id") not in wanted]
    ended = []
    if module.check_mode:
        ids = set(x.get("id") for x in in_force)
        ended = [i for i in wanted if i in ids]
    else:
        for lease_id in wanted:
            status, _, server, errors, refusal = call(servers, "DELETE", "/v1/maintenance/%d" % lease_id, p, tls)
            unanswered.extend(errors)
            if status == 404:
                continue  # ended or expired already: what was asked for holds
            if refusal or status is None:
                module.fail_json(
                    msg="preflight maintenance: could not end lease %d: %s" % (lease_id, refusal or "no aggregator answered: %s" % "; ".join(errors)),
                    **dict(empty, ended=ended, unanswered=unanswered)
                )
            ended.append(lease_id)
        if wanted:
            in_force, server = leases()
    module.exit_json(
        changed=bool(ended), leases=in_force, ended=ended, server=server, unanswered=unanswered,
        msg="preflight maintenance: %d lease(s) in force%s" % (
            len(in_force), "; ended %s" % ", ".join(str(i) for i in ended) if ended else ""),
    )


if __name__ == "__main__":
    main()
