#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: preflight contributors
# Apache License 2.0
"""Ansible module: ask a preflight aggregator whether a scope is go."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: preflight_gate
short_description: Ask preflight whether the nodes of a scope may be updated
description:
  - Asks one or more preflight aggregators C(GET /v1/gate) for a label scope.
  - With O(wait), keeps asking until the answer is go or O(timeout) passes.
  - Fails the task on no-go (listing the blockers, worst first) unless
    O(fail_on_no_go=false); always returns the ready and blocked nodes, so a
    play can continue with the ready ones (C(--limit)) instead of hanging on
    a degraded node.
  - Fail-closed: an unreachable aggregator or an unreadable answer is never go.
  - Fails over like C(preflight gate --server A --server B): a server that does
    not answer (connection refused, timeout, 5xx, an unreadable or
    inconsistent answer) is skipped for the next one; a 4xx stops the walk
    (every replica would say the same). The result says which server
    answered (RV(server)) and why the ones before it were skipped.
options:
  servers:
    description:
      - Aggregator base URLs (the replicas), tried in order. An entry may be a
        comma-separated list, as with the CLI.
    type: list
    elements: str
    required: true
  scope:
    description: Label selector, for example C(role=compute); empty for every node.
    type: str
    default: ""
  wait:
    description: Keep asking until go or O(timeout).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for go when O(wait) is set.
    type: int
    default: 600
  interval:
    description: Seconds between questions when O(wait) is set.
    type: int
    default: 5
  fail_on_no_go:
    description: Fail the task when the final answer is no-go.
    type: bool
    default: true
  request_timeout:
    description: Seconds for one HTTP request.
    type: int
    default: 5
  ca:
    description:
      - PEM file of the CA that signed the aggregators' certificates (for
        C(https://) servers); without it, the system trust store.
        Verification is never turned off.
    type: path
  cert:
    description:
      - PEM client certificate to present (mutual TLS), for example this
        host's FreeIPA/certmonger certificate. Needs O(key).
    type: path
  key:
    description: PEM private key of O(cert).
    type: path
  token_file:
    description:
      - File holding a bearer token (a reader identity or the admin token),
        instead of or besides a client certificate. Sent only to C(https://)
        servers and to loopback addresses.
    type: path
author:
  - preflight contributors
"""

EXAMPLES = r"""
- name: Stop before the update unless every compute node is go
  preflight_gate:
    servers: ["http://agg1.example.net:9100", "http://agg2.example.net:9100"]
    scope: role=compute
    wait: true
    timeout: 900

- name: Learn which nodes are ready, without failing
  preflight_gate:
    servers: ["https://preflight.example.net:9100"]
    scope: role=compute
    fail_on_no_go: false
  register: gate

- name: Over TLS, as this host (its FreeIPA certificate)
  preflight_gate:
    servers: ["https://undercloud.ctlplane.example.net:9100"]
    scope: role=compute
    ca: /etc/ipa/ca.crt
    cert: /etc/pki/tls/certs/preflight.crt
    key: /etc/pki/tls/private/preflight.key
"""

RETURN = r"""
verdict:
  description: C(go), C(no-go), or C(undecided) when no aggregator answered.
  type: str
  returned: always
ready:
  description: Nodes that are go.
  type: list
  elements: str
  returned: always
blocked:
  description: Nodes that are not go.
  type: list
  elements: str
  returned: always
blockers:
  description: Why, worst first (node, code, subject, message, since).
  type: list
  elements: dict
  returned: always
waived:
  description: Waivers that turned a blocker into go.
  type: list
  elements: dict
  returned: always
server:
  description: The aggregator that gave the answer (empty when none did).
  type: str
  returned: always
unanswered:
  description:
    - Aggregators tried before it (or all of them, when none answered), each
      with why. (Not C(skipped): Ansible reads that key as "task skipped".)
  type: list
  elements: str
  returned: always
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import quote, urlsplit
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError


def split_servers(servers):
    """Entries as given, comma lists expanded, blanks dropped."""
    return [s.strip() for entry in servers for s in entry.split(",") if s.strip()]


def in_clear(server):
    """A server a token would reach unencrypted over the network: plain
    HTTP to anything but a loopback address."""
    u = urlsplit(server)
    host = (u.hostname or "").lower()
    loopback = host == "localhost" or host == "::1" or host.startswith("127.")
    return u.scheme != "https" and not loopback


def ask(servers, scope, request_timeout, tls):
    """Returns (answer, server, errors, refusal): the parsed body and the
    server that gave it, or None; the servers skipped, each with why; and a
    4xx refusal message, which stops the walk. `tls` holds ca, cert, key
    and the bearer token (or None)."""
    errors = []
    for server in servers:
        url = "%s/v1/gate?scope=%s" % (server.rstrip("/"), quote(scope, safe=""))
        headers = {"Authorization": "Bearer %s" % tls["token"]} if tls["token"] else None
        try:
            resp = open_url(
                url, method="GET", timeout=request_timeout, headers=headers,
                validate_certs=True, ca_path=tls["ca"], client_cert=tls["cert"], client_key=tls["key"],
            )
            status, body = resp.getcode(), resp.read()
        except HTTPError as e:
            status, body = e.code, e.read()
        except Exception as e:  # pylint: disable=broad-except
            errors.append("%s: %s" % (server, e))
            continue
        if status in (200, 503):
            try:
                answer = json.loads(body)
            except ValueError as e:
                errors.append("%s: unreadable answer: %s" % (server, e))
                continue
            # Status and body must agree, or the answer is not trusted.
            if (answer.get("verdict") == "go") != (status == 200):
                errors.append("%s: HTTP %d disagrees with verdict %r" % (server, status, answer.get("verdict")))
                continue
            return answer, server, errors, None
        if 400 <= status < 500:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body
            return None, "", errors, "%s: HTTP %d: %s" % (server, status, message)
        errors.append("%s: HTTP %d" % (server, status))
    return None, "", errors, None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            servers=dict(type="list", elements="str", required=True),
            scope=dict(type="str", default=""),
            wait=dict(type="bool", default=False),
            timeout=dict(type="int", default=600),
            interval=dict(type="int", default=5),
            fail_on_no_go=dict(type="bool", default=True),
            request_timeout=dict(type="int", default=5),
            ca=dict(type="path"),
            cert=dict(type="path"),
            key=dict(type="path", no_log=False),
            token_file=dict(type="path"),
        ),
        required_together=[("cert", "key")],
        supports_check_mode=True,
    )
    p = module.params
    undecided = dict(verdict="undecided", ready=[], blocked=[], blockers=[], waived=[], server="", unanswered=[])
    servers = split_servers(p["servers"])
    if not servers:
        module.fail_json(msg="preflight gate: servers is empty", **undecided)
    for f in ("ca", "cert", "key", "token_file"):
        if p[f] is not None and not os.access(p[f], os.R_OK):
            module.fail_json(msg="preflight gate: %s %s cannot be read" % (f, p[f]), **undecided)
    token = None
    if p["token_file"]:
        with open(p["token_file"]) as f:
            token = f.read().strip()
        if not token:
            module.fail_json(msg="preflight gate: token_file %s is empty" % p["token_file"], **undecided)
        clear = [s for s in servers if in_clear(s)]
        if clear:
            module.fail_json(msg="preflight gate: would send the token in clear to %s; use https://" % ", ".join(clear), **undecided)
    tls = dict(ca=p["ca"], cert=p["cert"], key=p["key"], token=token)
    deadline = time.time() + p["timeout"]
    while True:
        answer, server, skipped, refusal = ask(servers, p["scope"], p["request_timeout"], tls)
        if refusal:
            module.fail_json(msg="preflight gate: refused: %s" % refusal, verdict="undecided", ready=[], blocked=[], blockers=[], waived=[], server="", unanswered=skipped)
        go = answer is not None and answer.get("verdict") == "go"
        if go or not p["wait"] or time.time() + p["interval"] > deadline:
            break
        time.sleep(p["interval"])
    if answer is None:
        module.fail_json(
            msg="preflight gate: could not decide (treat as no-go), no aggregator answered: %s" % "; ".join(skipped),
            verdict="undecided", ready=[], blocked=[], blockers=[], waived=[], server="", unanswered=skipped,
        )
    result = dict(
        changed=False,
        server=server,
        unanswered=skipped,
        verdict=answer["verdict"],
        ready=answer.get("ready", []),
        blocked=answer.get("blocked", []),
        blockers=answer.get("blockers", []),
        waived=answer.get("waived", []),
    )
    if not go and p["fail_on_no_go"]:
        lines = ["%s %s %s: %s" % (b.get("node"), b.get("code"), b.get("subject"), b.get("message")) for b in result["blockers"]]
        module.fail_json(msg="preflight gate: no-go for scope %r (answered by %s): %s" % (p["scope"], server, "; ".join(lines)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
