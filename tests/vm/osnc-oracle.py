#!/usr/bin/env python3
"""The guest half of the os-net-config oracle (tests/vm/osnc-oracle.sh).

Runs inside the systemd VM (8 virtio NICs eth0..eth7; eth1 + eth2 are the
ports of bond0, eth0 carries SSH and is never touched), with os-net-config
installed from PyPI and preflight copied in. For each state it compares, on
every nicN of a config that names nic1..nic8:

  - `os-net-config -i [-m FILE]` (the real tool) with preflight's predicted
    next-run mapping (`preflight inspect --json`, `nic_mapping.*.next_run`);
  - the names os-net-config moved since the group's baseline (all links up:
    what the configuration was built on) with preflight's NIC_RENUMBERED
    subjects, and the baseline with preflight's in-force mapping;
  - the mapping entries os-net-config logged as "not found" with preflight's
    MAPPING_ENTRY_UNMATCHED subjects.

  osnc-oracle.py prepare       the config (nic1..nic8), extra NICs up, MACs
  osnc-oracle.py serve         answer `os-net-config -i` from one interpreter
                               (see os_net_config(); the baselines of
                               PROCESS_CHECKED are also asked of a process)
  osnc-oracle.py list          states as "NAME<TAB>qemu NICs to unplug"
  osnc-oracle.py run NAME      set the state up (the host has pulled the
                               cables), compare, restore; exit 1 on any
                               disagreement, printing the state, the name
                               and both answers
"""

import ast
import json
import os
import re
import socket
import subprocess
import sys
import time

NICS = [f"eth{i}" for i in range(8)]
NAMES = [f"nic{i}" for i in range(1, 9)]
CONFIG = "/root/oracle/config.yaml"
MAPPING = "/root/oracle/mapping.yaml"
DPDK_MAP = "/var/lib/os-net-config/dpdk_mapping.yaml"
SRIOV_MAP = "/var/lib/os-net-config/sriov_config.yaml"
OSNC = os.environ.get("OSNC", "/usr/local/bin/os-net-config")
PREFLIGHT = "/root/oracle/preflight"
SOCK = "/root/oracle/osnc.sock"
# Groups whose baseline is also asked of an os-net-config process.
PROCESS_CHECKED = ("nomap", "upper-mac", "unquoted-mac")


def mac(nic):
    """The MAC os-net-config compares with: a bond port's permanent one."""
    for rel in ("bonding_slave/perm_hwaddr", "address"):
        try:
            with open(f"/sys/class/net/{nic}/{rel}") as f:
                return f.read().strip()
        except OSError:
            pass
    raise RuntimeError(f"no MAC for {nic}")


class Plain(str):
    """A mapping value written unquoted."""


# Each state: links pulled (qemu monitor, by the host), admin-down NICs,
# NICs unbound from virtio_net (gone from the kernel), which of those
# dpdk_mapping.yaml lists, SR-IOV PFs in sriov_config.yaml, and the mapping
# file (a function of the NICs' MACs, read before anything is unbound).
# The first state of a group is its baseline: every link up.
GROUPS = [
    ("nomap", None, [
        dict(),
        dict(pull=[3]),
        dict(pull=[1]),                      # a bond port
        dict(pull=[1, 5]),
        dict(down=["eth4"]),                 # admin down
        dict(unbind=["eth6"], dpdk=["eth6"]),
        dict(unbind=["eth6"], dpdk=["eth6"], pull=[3]),
        dict(unbind=["eth3", "eth6"], dpdk=["eth3", "eth6"], pull=[5]),
        dict(unbind=["eth6"], rebased=True),  # gone, not listed
        dict(sriov_pf=["eth7"], pull=[7]),   # 18.x counts it, 14.x not
    ]),
    ("partial-name", lambda m: {"nic1": "eth3"}, [
        dict(),
        dict(pull=[1]),
        dict(pull=[3]),                      # the pinned NIC itself
    ]),
    ("partial-mac", lambda m: {"nic2": m["eth5"], "nic5": m["eth2"]}, [
        dict(),
        dict(pull=[4]),
        dict(down=["eth2"], pull=[5]),       # the bond port pinned by MAC
    ]),
    ("complete-mac", lambda m: {f"nic{i + 1}": m[n] for i, n in enumerate(reversed(NICS))}, [
        dict(),
        dict(pull=[1, 3]),
    ]),
    ("complete-mixed", lambda m: {f"nic{i + 1}": (n if i % 2 else m[n]) for i, n in enumerate(NICS)}, [
        dict(),
        dict(pull=[2, 6]),
    ]),
    ("upper-mac", lambda m: {"nic1": m["eth4"].upper(), "nic3": m["eth6"]}, [
        dict(),
        dict(pull=[2]),
    ]),
    ("mac-on-no-nic", lambda m: {"nic2": "52:54:00:99:99:99", "nic4": "eth5"}, [
        dict(),
        dict(pull=[3]),
    ]),
    # Unquoted, a MAC of decimal groups below 60 (qemu's own) is a
    # sexagesimal number to os-net-config's YAML 1.1 reader: no NIC has it.
    ("unquoted-mac", lambda m: {"nic1": Plain(m["eth1"]), "nic2": Plain(m["eth4"])}, [
        dict(),
        dict(pull=[3]),
    ]),
    ("name-on-no-nic", lambda m: {"nic3": "em9"}, [
        dict(),
        dict(pull=[1]),
    ]),
    ("dpdk-mac", lambda m: {"nic1": m["eth6"]}, [
        dict(),
        dict(unbind=["eth6"], dpdk=["eth6"]),
        dict(unbind=["eth6"], dpdk=["eth6"], pull=[4]),
    ]),
]


def states():
    out = []
    for group, mapping, items in GROUPS:
        for i, st in enumerate(items):
            parts = [f"pull{'+'.join(map(str, st['pull']))}" if st.get("pull") else ""]
            for k in ("down", "unbind", "dpdk", "sriov_pf"):
                if st.get(k):
                    parts.append(f"{k}-{'+'.join(st[k])}")
            name = f"{group}/{i}:" + (",".join(p for p in parts if p) or "all-up")
            out.append((name, group, mapping, st, i == 0))
    return out


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def virtio_of(nic):
    """(virtio device name, PCI address) of a virtio NIC."""
    dev = os.path.realpath(f"/sys/class/net/{nic}/device")
    return os.path.basename(dev), os.path.basename(os.path.dirname(dev))


def settle(want_up, gone, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        bad = []
        for n in NICS:
            path = f"/sys/class/net/{n}/operstate"
            if n in gone:
                if os.path.exists(path):
                    bad.append(f"{n} still present")
                continue
            try:
                with open(path) as f:
                    op = f.read().strip()
            except OSError:
                bad.append(f"{n} missing")
                continue
            if (op == "up") != (n in want_up):
                bad.append(f"{n} is {op}")
        if not bad:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the state did not settle: " + ", ".join(bad))
        time.sleep(0.2)


def parse_answer(what, rc, stdout, logs):
    """os-net-config -i's answer: the mapping it prints last on stdout (JSON
    from 18.x, a Python dict from 14.x), and the mapping-file values its log
    says it did not find ("mac X not found in available nics ...")."""
    lines = stdout.strip().splitlines()
    if rc != 0 or not lines:
        raise RuntimeError(f"{what}: exit {rc}: {stdout}{logs}")
    try:
        mapping = json.loads(lines[-1])
    except ValueError:
        mapping = ast.literal_eval(lines[-1])
    not_found = sorted(set(re.findall(r"(?:mac|nic) (\S+) not found in available nics", stdout + logs)))
    return mapping, not_found


def os_net_config_process(mapping_file):
    """`os-net-config -i [-m FILE]`, a process of its own."""
    cmd = [OSNC, "-i"] + (["-m", mapping_file] if mapping_file else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    return parse_answer(" ".join(cmd), r.returncode, r.stdout, r.stderr)


def os_net_config(mapping_file):
    """The same answer from the server (`serve`): os-net-config's own
    `cli.main` in an interpreter that imported it once (Python's imports take
    about 5 s per process under TCG), its one module-level cache
    (`objects._MAPPED_NICS`) reset before each call, so every call reads sysfs
    and the state files afresh exactly as a new process does. Without the
    server, a process."""
    if not os.path.exists(SOCK):
        return os_net_config_process(mapping_file)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(SOCK)
        s.sendall((mapping_file or "").encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    reply = json.loads(data)
    return parse_answer("os-net-config -i (server)", reply["rc"], reply["stdout"], reply["logs"])


def serve():
    import contextlib
    import io
    import logging
    from os_net_config import cli, objects

    if os.path.exists(SOCK):
        os.remove(SOCK)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(SOCK + ".new")
    srv.listen(1)
    os.rename(SOCK + ".new", SOCK)
    while True:
        conn, _ = srv.accept()
        with conn:
            req = b""
            while not req.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                req += chunk
            mapping_file = req.decode().strip()
            argv = ["os-net-config", "-i"] + (["-m", mapping_file] if mapping_file else [])
            objects._MAPPED_NICS = None
            buf = io.StringIO()
            # Its log, whichever stream its version writes it to (18.x:
            # stdout; 14.x: the root logger's stderr handler, made once).
            logs = io.StringIO()
            handler = logging.StreamHandler(logs)
            logging.getLogger().addHandler(handler)
            try:
                with contextlib.redirect_stdout(buf):
                    rc = cli.main(argv)
            except Exception as e:  # what a process would die of
                rc = 1
                logs.write(f"{type(e).__name__}: {e}\n")
            finally:
                logging.getLogger().removeHandler(handler)
            conn.sendall(json.dumps({"rc": rc, "stdout": buf.getvalue(), "logs": logs.getvalue()}).encode())


def preflight(mapping_file):
    cmd = [PREFLIGHT, "inspect", "--json", "--ovsdb", "off", "--os-net-config", CONFIG]
    if mapping_file:
        cmd += ["--nic-mapping", mapping_file]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stdout}{r.stderr}")


def write_yaml_list(path, items):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for it in items:
            f.write("- " + "\n  ".join(f"{k}: '{v}'" for k, v in it.items()) + "\n")


def run(name, version):
    t0 = time.monotonic()
    try:
        return run_state(name, version)
    finally:
        print(f"     ({time.monotonic() - t0:.1f} s for the state in the guest)")


def run_state(name, version):
    found = [s for s in states() if s[0] == name]
    if not found:
        raise SystemExit(f"no state {name}")
    _, group, mapping, st, baseline = found[0]
    macs = json.load(open("/root/oracle/macs.json"))
    mapping_file = None
    if mapping:
        mapping_file = MAPPING
        with open(MAPPING, "w") as f:
            f.write("interface_mapping:\n")
            for k, v in mapping(macs).items():
                f.write(f"  {k}: {v}\n" if isinstance(v, Plain) else f"  {k}: '{v}'\n")
    pulled = {f"eth{i}" for i in st.get("pull", [])}
    down = set(st.get("down", []))
    unbind = st.get("unbind", [])
    dpdk = []
    for n in st.get("dpdk", []):
        _, pci = virtio_of(n)
        dpdk.append({"name": n, "pci_address": pci, "mac_address": macs[n], "driver": "vfio-pci"})
    if dpdk:
        write_yaml_list(DPDK_MAP, dpdk)
    if st.get("sriov_pf"):
        write_yaml_list(SRIOV_MAP, [{"device_type": "pf", "name": n, "numvfs": 0} for n in st["sriov_pf"]])
    unbound = []
    try:
        for n in down:
            sh("ip", "link", "set", n, "down")
        for n in unbind:
            vdev, _ = virtio_of(n)
            with open("/sys/bus/virtio/drivers/virtio_net/unbind", "w") as f:
                f.write(vdev)
            unbound.append(vdev)
        settle({n for n in NICS} - pulled - down - set(unbind), set(unbind))
        return compare(f"{version} {name}".strip(), group, mapping_file, baseline, st)
    finally:
        for vdev in unbound:
            with open("/sys/bus/virtio/drivers/virtio_net/bind", "w") as f:
                f.write(vdev)
        for p in (DPDK_MAP, SRIOV_MAP):
            if os.path.exists(p):
                os.remove(p)
        time.sleep(0.3 if unbound else 0)
        for n in NICS[3:] + sorted(down):
            sh("ip", "link", "set", n, "up", check=False)


def compare(name, group, mapping_file, baseline, st):
    t0 = time.monotonic()
    osnc, not_found = os_net_config(mapping_file)
    t1 = time.monotonic()
    pf = preflight(mapping_file)
    t2 = time.monotonic()
    if baseline and group in PROCESS_CHECKED:
        # Also as a process of its own (about 10 s under TCG): the server's
        # answers are the tool's.
        proc = os_net_config_process(mapping_file)
        if proc != (osnc, not_found):
            print(f"FAIL {name}: the os-net-config process answered {proc}, the server {(osnc, not_found)}")
            return 1
    base_path = f"/root/oracle/baseline-{group}.json"
    if baseline:
        with open(base_path, "w") as f:
            json.dump(osnc, f)
    base = json.load(open(base_path))
    table = pf.get("nic_mapping", {})
    errors = []
    for n in NAMES:
        got = (table.get(n) or {}).get("next_run")
        want = osnc.get(n)
        if got != want:
            errors.append(f"{n}: os-net-config maps it to {want}, preflight predicts {got}")
    renumbered = sorted({f["subject"] for f in pf["findings"] if f["code"] == "NIC_RENUMBERED"})
    in_force = {n: (table.get(n) or {}).get("in_force") for n in NAMES}
    base_full = {n: base.get(n) for n in NAMES}
    if not st.get("rebased"):
        if in_force != base_full:
            errors.append(f"in force: built on {base_full}, preflight says {in_force}")
        moved = sorted(n for n in NAMES if osnc.get(n) != base.get(n))
        if renumbered != moved:
            errors.append(f"NIC_RENUMBERED: os-net-config moved {moved}, preflight reports {renumbered}")
    unmatched = sorted({f["subject"] for f in pf["findings"] if f["code"] == "MAPPING_ENTRY_UNMATCHED"})
    values = {}
    if mapping_file:
        import yaml  # PyYAML, installed with os-net-config: the values as it reads them

        values = {k: str(v) for k, v in yaml.safe_load(open(mapping_file))["interface_mapping"].items()}
    logged = sorted(k for k, v in values.items() if v in not_found)
    if unmatched != logged:
        errors.append(f"MAPPING_ENTRY_UNMATCHED: os-net-config logged {logged} not found, preflight reports {unmatched}")
    if errors and os.path.exists(SOCK):
        proc = os_net_config_process(mapping_file)
        errors.append(f"(the same as a process of its own: {json.dumps(proc[0], sort_keys=True)})")
    print(f"{'FAIL' if errors else 'ok  '} {name}: os-net-config {json.dumps(osnc, sort_keys=True)}"
          f" ({t1 - t0:.1f} s, preflight {t2 - t1:.1f} s)")
    for e in errors:
        print(f"     {name}: {e}")
    return 1 if errors else 0


def main():
    if sys.argv[1:2] == ["list"]:
        only = set(sys.argv[2:])
        for name, group, _, st, _ in states():
            if only and group not in only:
                continue
            print(f"{name}\t{' '.join(map(str, st.get('pull', [])))}")
        return 0
    if sys.argv[1:2] == ["prepare"]:
        os.makedirs("/root/oracle", exist_ok=True)
        with open(CONFIG, "w") as f:
            f.write("network_config:\n")
            for n in NAMES:
                f.write(f"  - {{type: interface, name: {n}}}\n")
        for i, n in enumerate(NICS):
            # qemu's nicN (the monitor's cable) is ethN: checked by the MACs
            # tests/vm/systemd-vm.sh gives the NICs it adds.
            if i >= 3 and mac(n) != f"52:54:00:ab:cd:{i:02x}":
                raise SystemExit(f"{n} has MAC {mac(n)}, not qemu nic{i}'s")
        for n in NICS[3:]:
            sh("ip", "link", "set", n, "up")
        with open("/root/oracle/macs.json", "w") as f:
            json.dump({n: mac(n) for n in NICS}, f)
        return 0
    if sys.argv[1:2] == ["run"]:
        return run(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    if sys.argv[1:2] == ["serve"]:
        return serve()
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
