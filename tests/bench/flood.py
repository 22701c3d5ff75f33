# Flood measurement for issue 37 (scratch, not in the repo): a real aggregator
# under `ulimit -n NOFILE`, FLOOD slowloris connections from 127.0.0.2 (half
# silent, half dripping a header byte per 500 ms), then a report (heartbeat
# with a node token) via curl and `preflight gate` from 127.0.0.1, timed.
import hashlib, os, socket, subprocess, sys, tempfile, threading, time
binary, nofile, flood = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp(prefix="h4m-")
tok = "n1-token-measure"
open(f"{d}/tokens", "w").write(f"n1 {hashlib.sha256(tok.encode()).hexdigest()}\n")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
open(f"{d}/agg.toml", "w").write(f'[aggregator]\nlisten = "127.0.0.1:{port}"\ndatabase = "{d}/p.db"\nadmin_token = "adm-measure"\nnode_tokens_file = "{d}/tokens"\nsettle = "0s"\nclosed_inventory = true\n[[aggregator.node]]\nname = "n1"\nlabels = {{ role = "compute" }}\n')
agg = subprocess.Popen(["sh", "-c", f'ulimit -n {nofile} && exec "$0" aggregator --config "$1"', binary, f"{d}/agg.toml"], env={**os.environ, "PREFLIGHT_LOG": "error"})
try:
    for _ in range(200):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); break
        except OSError: time.sleep(0.1)
    def report(seq, limit):
        t = time.monotonic()
        out = subprocess.run(["curl", "-s", "-m", str(limit), "-o", "/dev/null", "-w", "%{http_code}", "-H", f"authorization: Bearer {tok}", "-H", "content-type: application/json",
            "-d", f'{{"node":"n1","boot_id":"b","seq":{seq},"kind":"heartbeat","state_seq":1}}', f"http://127.0.0.1:{port}/v1/reports"], capture_output=True, text=True)
        return out.stdout, time.monotonic() - t
    print("before the flood: report", report(1, 60))
    conns = []
    for i in range(flood):
        c = socket.socket(); c.bind(("127.0.0.2", 0)); c.settimeout(2)
        try: c.connect(("127.0.0.1", port)); conns.append(c)
        except OSError: c.close()
    print(f"flood: {len(conns)} of {flood} connected")
    stop = time.monotonic() + 60
    def drip():
        hdr = b"GET /v1/gate?scope= HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        i = 0
        while time.monotonic() < stop:
            for c in conns[1::2]:
                try: c.send(hdr[i:i+1])
                except OSError: pass
            i += 1; time.sleep(0.5)
    threading.Thread(target=drip, daemon=True).start()
    time.sleep(1)
    def gate(what):
        t = time.monotonic()
        g = subprocess.run([binary, "gate", "--server", f"http://127.0.0.1:{port}", "--scope", "role=compute", "--timeout", "0s"], capture_output=True, text=True, env={**os.environ, "PREFLIGHT_LOG": "error"})
        print(f"under the flood: {what} gate exit {g.returncode} in {time.monotonic()-t:.3f} s: {g.stderr.strip()[:160]}")
    gate("first")
    print("under the flood: report (http code, s)", report(2, 60))
    gate("second")
    m = subprocess.run(["curl", "-s", "-m", "60", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
    print("\n".join(l for l in m.splitlines() if l.startswith("preflight_aggregator_connections_refused_total")))
finally:
    agg.kill(); agg.wait()
