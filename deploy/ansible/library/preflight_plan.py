#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: preflight contributors
# Apache License 2.0
"""Ansible module: ask a preflight aggregator which nodes of a scope may go
down for an update now, and optionally take them under a maintenance lease."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: preflight_plan
short_description: Ask preflight which nodes of a scope may be updated now
description:
  - Asks one or more preflight aggregators C(GET /v1/plan) for the largest
    batch of a label scope that may go down now, within O(max_unavailable)
    and O(per) (leases included), and why every other node is held.
  - With O(take), C(POST /v1/plan) takes the batch under one maintenance
    lease, atomically (two pipelines never exceed the limits together). In
    check mode nothing is taken; the batch is the one C(GET) answers.
  - An empty batch is not a failure; the task is unchanged and RV(msg) says
    why nothing may start now (the held nodes and their reasons).
  - Fail-closed: an unreachable aggregator, an unreadable answer, or one
    whose HTTP status and batch disagree is never a batch; the task fails
    when no aggregator gives a readable answer. A 4xx (bad selector or
    budget, unknown scope, a node already leased) fails the task at once.
  - Fails over like M(preflight_gate). With O(take), a replica that timed
    out may have taken a lease it could not report; it expires after
    O(duration) and its nodes then turn MAINTENANCE_OVERRUN if not back, so
    such a lease never goes unnoticed.
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
  max_unavailable:
    description:
      - How many nodes of the scope may be down at once, leases included, as
        C(N) or C(P%); the aggregator's default (1, kured's lock) when unset.
    type: str
  per:
    description: C(LABEL:K), at most K nodes of one failure domain down at once.
    type: str
  take:
    description: Take the batch under a maintenance lease (operator role).
    type: bool
    default: false
  duration:
    description: With O(take), how long the lease lasts, for example C(30m).
    type: str
  reason:
    description: With O(take), why (kept in the lease and the audit log).
    type: str
  pipeline:
    description: With O(take), the pipeline's name (kept in the lease).
    type: str
  request_timeout:
    description: Seconds for one HTTP request.
    type: int
    default: 10
  ca:
    description:
      - PEM file of the CA that signed the aggregators' certificates (for
        C(https://) servers); without it, the system trust store.
        Verification is never turned off.
    type: path
  cert:
    description: PEM client certificate to present (mutual TLS). Needs O(key).
    type: path
  key:
    description: PEM private key of O(cert).
    type: path
  token_file:
    description:
      - File holding a bearer token (an operator identity to O(take)). Sent
        only to C(https://) servers and to loopback addresses.
    type: path
author:
  - preflight contributors
"""

EXAMPLES = r"""
- name: Which compute nodes may go now, at most one per rack
  preflight_plan:
    servers: ["https://agg1.example.net:9100", "https://agg2.example.net:9100"]
    scope: role=compute
    max_unavailable: "10%"
    per: rack:1
  register: plan

- name: Take the batch for 30 minutes
  preflight_plan:
    servers: ["https://agg1.example.net:9100"]
    scope: role=compute
    max_unavailable: "2"
    per: rack:1
    take: true
    duration: 30m
    reason: kernel 6.1.0-27
    pipeline: "tripleo-update-{{ ansible_date_time.epoch }}"
    token_file: /etc/preflight/operator.token
  register: plan

- name: Put the batch in a group for the next play
  ansible.builtin.add_host:
    name: "{{ item }}"
    groups: preflight_batch
  loop: "{{ plan.batch }}"
"""

RETURN = r"""
batch:
  description: Nodes that may go down now (empty when none may), in name order.
  type: list
  elements: str
  returned: always
held:
  description:
    - Every other node of the scope, with C(node), C(reason) (C(maintenance),
      C(not_go), C(domain_blocked), C(domain_full), C(budget_spent),
      C(no_domain)) and C(detail).
  type: list
  elements: dict
  returned: always
lease:
  description:
    - The lease taken (C(id), C(nodes), C(pipeline), C(reason), C(author),
      C(created_at), C(expires_at)); null without O(take), in check mode, or
      when the batch is empty.
  type: dict
  returned: always
unavailable:
  description: Nodes of the scope already out (leased or back within their grace).
  type: list
  elements: str
  returned: always
members:
  description: Nodes in the scope.
  type: int
  returned: always
max_unavailable:
  description: The budget the aggregator applied, in nodes.
  type: int
  returned: always
server:
  description: The aggregator that gave the answer (empty when none did).
  type: str
  returned: always
unanswered:
  description: Aggregators tried before it (or all of them), each with why.
  type: list
  elements: str
  returned: always
error:
  description:
    - The aggregator's error code when it refused the question (a 4xx), for
      example C(unknown_scope) once an update has moved every node out of
      the scope, C(bad_request), C(leased).
  type: str
  returned: when refused
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import urlencode, urlsplit
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError

# An answer larger than this is not a plan (1,000 nodes with reasons fit
# in well under a megabyte per thousand); refuse rather than parse it.
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


def well_formed(answer, status, take):
    """Why the answer cannot be trusted, or None. The batch and the lease
    must agree with the status, else the answer starts nothing."""
    if not isinstance(answer, dict):
        return "not a JSON object"
    batch, held = answer.get("batch"), answer.get("held")
    if not isinstance(batch, list) or not all(isinstance(n, str) for n in batch):
        return "no batch of node names"
    if not isinstance(held, list) or not all(isinstance(h, dict) for h in held):
        return "no held list"
    if bool(batch) != (status == 200):
        return "HTTP %d disagrees with a batch of %d" % (status, len(batch))
    if take and batch:
        lease = answer.get("lease")
        if not isinstance(lease, dict) or sorted(lease.get("nodes") or []) != sorted(batch):
            return "a batch without its lease"
    return None


def ask(servers, p, tls, take):
    """Returns (answer, server, errors, refusal) as preflight_gate's ask;
    a refusal is (message, the aggregator's error code)."""
    errors = []
    query = dict(scope=p["scope"])
    for k in ("max_unavailable", "per"):
        if p[k] is not None:
            query[k] = p[k]
    headers = {"Authorization": "Bearer %s" % tls["token"]} if tls["token"] else {}
    data = None
    if take:
        body = dict(query, duration=p["duration"], reason=p["reason"], pipeline=p["pipeline"])
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    for server in servers:
        base = server.rstrip("/") + "/v1/plan"
        url = base if take else base + "?" + urlencode(query)
        try:
            resp = open_url(
                url, method="POST" if take else "GET", data=data, timeout=p["request_timeout"], headers=headers,
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
        if status in (200, 503):
            try:
                answer = json.loads(body)
            except ValueError as e:
                errors.append("%s: unreadable answer: %s" % (server, e))
                continue
            why = well_formed(answer, status, take)
            if why:
                errors.append("%s: %s" % (server, why))
                continue
            return answer, server, errors, None
        if 400 <= status < 500:
            try:
                err = json.loads(body)
                message, code = err.get("message", ""), err.get("error", "")
            except (ValueError, AttributeError):
                message, code = body[:1024], ""
            return None, "", errors, ("%s: HTTP %d: %s" % (server, status, message), code)
        errors.append("%s: HTTP %d" % (server, status))
    return None, "", errors, None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            servers=dict(type="list", elements="str", required=True),
            scope=dict(type="str", default=""),
            max_unavailable=dict(type="str"),
            per=dict(type="str"),
            take=dict(type="bool", default=False),
            duration=dict(type="str"),
            reason=dict(type="str"),
            pipeline=dict(type="str"),
            request_timeout=dict(type="int", default=10),
            ca=dict(type="path"),
            cert=dict(type="path"),
            key=dict(type="path", no_log=False),
            token_file=dict(type="path"),
        ),
        required_together=[("cert", "key")],
        required_if=[("take", True, ("duration", "reason", "pipeline"))],
        supports_check_mode=True,
    )
    p = module.params
    empty = dict(batch=[], held=[], lease=None, unavailable=[], members=0, max_unavailable=0, server="", unanswered=[])
    servers = split_servers(p["servers"])
    if not servers:
        module.fail_json(msg="preflight plan: servers is empty", **empty)
    for f in ("ca", "cert", "key", "token_file"):
        if p[f] is not None and not os.access(p[f], os.R_OK):
            module.fail_json(msg="preflight plan: %s %s cannot be read" % (f, p[f]), **empty)
    token = None
    if p["token_file"]:
        with open(p["token_file"]) as f:
            token = f.read().strip()
        if not token:
            module.fail_json(msg="preflight plan: token_file %s is empty" % p["token_file"], **empty)
        clear = [s for s in servers if in_clear(s)]
        if clear:
            module.fail_json(msg="preflight plan: would send the token in clear to %s; use https://" % ", ".join(clear), **empty)
    tls = dict(ca=p["ca"], cert=p["cert"], key=p["key"], token=token)
    take = p["take"] and not module.check_mode
    answer, server, skipped, refusal = ask(servers, p, tls, take)
    if refusal:
        module.fail_json(msg="preflight plan: refused: %s" % refusal[0], **dict(empty, unanswered=skipped, error=refusal[1]))
    if answer is None:
        module.fail_json(
            msg="preflight plan: could not tell (start nothing), no aggregator answered: %s" % "; ".join(skipped),
            **dict(empty, unanswered=skipped)
        )
    lease = answer.get("lease") if take else None
    result = dict(
        changed=lease is not None or (p["take"] and module.check_mode and bool(answer["batch"])),
        server=server,
        unanswered=skipped,
        batch=answer["batch"],
        held=answer["held"],
        lease=lease,
        unavailable=answer.get("unavailable", []),
        members=answer.get("members", 0),
        max_unavailable=answer.get("max_unavailable", 0),
    )
    if not result["batch"]:
        lines = ["%s %s (%s)" % (h.get("node"), h.get("reason"), h.get("detail")) for h in result["held"]]
        result["msg"] = "preflight plan: nothing may start now in scope %r (answered by %s): %s" % (
            p["scope"], server, "; ".join(lines) or "no nodes")
    elif lease is not None:
        result["msg"] = "preflight plan: leased %s as lease %s" % (", ".join(result["batch"]), lease.get("id"))
    else:
        result["msg"] = "preflight plan: may start %s" % ", ".join(result["batch"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
