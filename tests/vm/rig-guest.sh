#!/bin/sh
# Guest half of tests/tests/vm_rig.rs: the two-switch rig of issue 33
# (../shared/vm-harness.md, "Two switches inside the VM") and its scenarios,
# run inside one VM. `rig.sh setup`, `rig.sh fixtures`, then
# `rig.sh scenarios`; the host asserts on what this prints:
#   @@S <scenario>                      a scenario starts
#   @@K <scenario> <key> <value...>     one fact
#   @@JSON-BEGIN <scenario> <label>     `preflight inspect --json` output
#   @@JSON-END <scenario> <label>       (exit code as @@K <label>.exit)
#   @@TEXT-BEGIN / @@TEXT-END           the same for the text output
#   @@FRAME <member> <n> <base64>       a captured LLDP frame (pcap record)
# Every step is bounded in time: a scenario never hangs the VM.
#
#   node: bond0 (active-backup, primary mA, miimon 100) over mA and mB
#         bond0.100 10.100.0.10/24, bond0.200 10.200.0.10/24
#   swA:  br0 (vlan_filtering) with pA (mA's cable, VLANs 100 200), tA (trunk)
#         gateways g100 10.100.0.1, g200 10.200.0.1 on br0; lldpd switch-A
#   swB:  br0 with pB (mB's cable, VLAN 100 only: the latent fault), tB
#         (trunk, 100 200); lldpd switch-B

export PATH=/bin:/sbin:/usr/sbin
IP=/sbin/ip
BR=/sbin/bridge
S=setup
k() { echo "@@K $S $*"; }
begin() { S=$1; echo "@@S $1"; }
uptime_cs() { tr -d . </proc/uptime | cut -d' ' -f1; }

inspect() { # label [args...]: the JSON, its exit code and its duration
  l=$1; shift
  t0=$(uptime_cs)
  echo "@@JSON-BEGIN $S $l"
  preflight inspect --json --node vm "$@" 2>/tmp/inspect.err
  rc=$?
  echo
  echo "@@JSON-END $S $l"
  k "$l.exit" $rc
  k "$l.cs" $(($(uptime_cs) - t0))
  sed "s/^/@@K $S $l.stderr /" /tmp/inspect.err | head -n 20
}
inspect_text() { # label [args...]
  l=$1; shift
  echo "@@TEXT-BEGIN $S $l"
  preflight inspect --node vm "$@" 2>&1
  rc=$?
  echo "@@TEXT-END $S $l"
  k "$l.exit" $rc
}
active() { cat /sys/class/net/bond0/bonding/active_slave; }
wait_active() { # member: up to 5 s
  i=0
  while [ "$(active)" != "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  k active "$(active)"
}
pings() { # key target [ping args]: answered or not, 3 tries
  key=$1 target=$2
  shift 2
  if ping -c 3 -W 1 -w 4 -q "$@" "$target" >/dev/null 2>&1; then k "$key" ok; else k "$key" fail; fi
}
# A switch port for the node: VLANs (default: 100 200), no untagged VLAN 1.
port_vlans() { # ns port vid...
  ns=$1; p=$2; shift 2
  $BR -n "$ns" vlan del dev "$p" vid 1 2>/dev/null
  for v in "$@"; do $BR -n "$ns" vlan add dev "$p" vid "$v"; done
}
mfs() { # ns port mtu [overhead]: the MFS TLV (OUI 00-12-0F, subtype 4) on port
  # 802.3's maximum frame size of a port that takes 802.1Q-tagged frames of
  # MTU bytes: header 14 + tag 4 + FCS 4.
  hex=$(printf '%04x' $(($3 + ${4:-22})))
  lldpcli -u "/tmp/$1.sock" configure ports "$2" lldp custom-tlv replace oui 00,12,0f subtype 4 \
    oui-info "$(echo "$hex" | cut -c1-2),$(echo "$hex" | cut -c3-4)" >/dev/null || k mfs_failed "$1 $2"
}
lldpd_start() { # ns port-pattern system-name
  # Own /run per switch (ip netns exec gives a mount namespace); -L to a
  # missing lldpcli: no configuration run at start, it is set below.
  $IP netns exec "$1" sh -c "mount -t tmpfs t /run && mkdir -p /run/lldpd && exec lldpd -L /opt/lldpcli -d -u /tmp/$1.sock -I $2 -S $3" \
    >"/tmp/lldpd-$1.log" 2>&1 &
  i=0
  while [ ! -S "/tmp/$1.sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  # One LLDPDU a second (TTL 4 s), so that a recabling shows within seconds.
  lldpcli -u "/tmp/$1.sock" configure lldp tx-interval 1 >/dev/null
  lldpcli -u "/tmp/$1.sock" configure system hostname "$3" >/dev/null
  # lldpd waits paused for its configuration run (skipped with -L): resume.
  lldpcli -u "/tmp/$1.sock" resume >/dev/null
}

lldp_wait() { # member text: until an LLDPDU on member contains text (≤ 10 s)
  # A switch's change shows in its next LLDPDU: inspect must not hear the
  # one from before the change.
  i=0
  while [ $i -lt 5 ]; do
    rm -f /tmp/w.pcap
    timeout 3 tcpdump -Z root -i "$1" -c 1 -w /tmp/w.pcap ether proto 0x88cc >/dev/null 2>&1
    grep -q "$2" /tmp/w.pcap 2>/dev/null && return 0
    i=$((i + 1))
  done
  k lldp_wait_failed "$1 $2"
}

setup() {
  kv=$(uname -r)
  for m in llc stp bridge garp mrp 8021q; do insmod "/lib/modules/$kv/$m.ko" || k insmod_failed "$m"; done
  $IP netns add swA && $IP netns add swB || exit 1
  $IP link add mA type veth peer name pA && $IP link set pA netns swA
  $IP link add mB type veth peer name pB && $IP link set pB netns swB
  $IP link add tA type veth peer name tB && $IP link set tA netns swA && $IP link set tB netns swB
  for s in swA swB; do
    $IP -n "$s" link set lo up
    $IP -n "$s" link add br0 type bridge vlan_filtering 1 || exit 1
  done
  for pair in swA:pA swA:tA swB:pB swB:tB; do
    s=${pair%%:*}; p=${pair#*:}
    $IP -n "$s" link set "$p" master br0 && $IP -n "$s" link set "$p" up
  done
  port_vlans swA pA 100 200
  port_vlans swA tA 100 200
  port_vlans swB tB 100 200
  port_vlans swB pB 100
  for s in swA swB; do $IP -n "$s" link set br0 up; done
  for v in 100 200; do
    $BR -n swA vlan add dev br0 vid $v self
    $IP -n swA link add link br0 name g$v type vlan id $v
    $IP -n swA addr add 10.$v.0.1/24 dev g$v
    $IP -n swA link set g$v up
  done
  $IP link add bond0 type bond mode active-backup miimon 100 || exit 1
  for m in mA mB; do $IP link set $m down && $IP link set $m master bond0; done
  $IP link set bond0 type bond primary mA
  for m in mA mB; do $IP link set $m up; done
  $IP link set bond0 up
  for v in 100 200; do
    $IP link add link bond0 name bond0.$v type vlan id $v
    $IP addr add 10.$v.0.10/24 dev bond0.$v
    $IP link set bond0.$v up
  done
  # Routes through each VLAN's gateway: the path check's first targets.
  $IP route add 192.0.2.0/24 via 10.100.0.1
  $IP route add 198.51.100.0/24 via 10.200.0.1
  lldpd_start swA pA,pB switch-A
  lldpd_start swB pB switch-B
  # lldpd never sends the 802.3 Maximum Frame Size TLV of its own (it only
  # decodes it): advertise each port's as a switch does.
  mfs swA pA 1500
  mfs swB pB 1500
  wait_active mA
  pings ping100 10.100.0.1
  pings ping200 10.200.0.1
  k bond_mac "$(cat /sys/class/net/bond0/address)"
  for m in mA mB; do
    k perm_$m "$(grep -A6 "Slave Interface: $m" /proc/net/bonding/bond0 | sed -n 's/^Permanent HW addr: //p')"
  done
}

fixtures() {
  # Two LLDPDUs per member (1 s apart) as the switches send them now.
  for m in mA mB; do
    timeout 10 tcpdump -Z root -U -i $m -c 2 -w /tmp/lldp-$m.pcap ether proto 0x88cc >/tmp/tcpdump-$m.log 2>&1 &
  done
  wait
  for m in mA mB; do
    k tcpdump_$m "$(tail -n 1 /tmp/tcpdump-$m.log)"
    [ -f /tmp/lldp-$m.pcap ] && echo "@@PCAP $m $(base64 /tmp/lldp-$m.pcap | tr -d '\n')"
  done
  for s in swA swB; do
    tail -n 12 /tmp/lldpd-$s.log | sed "s/^/@@K setup lldpd_$s /"
    lldpcli -u /tmp/$s.sock show running-configuration 2>&1 | grep -i custom | sed "s/^/@@K setup lldpd_$s /"
    lldpcli -u /tmp/$s.sock show interfaces 2>&1 | grep -i 'interface\|ttl' | sed "s/^/@@K setup lldpd_$s /"
  done
}

fdb_port() { # ns mac vid: the port the switch forwards that MAC to now
  $BR -n "$1" fdb show br br0 | grep -i "^$2 dev .* vlan $3 " | head -n 1 | cut -d' ' -f3
}

no_disturbance() {
  begin no_disturbance
  rounds=${RIG_ROUNDS:-100}
  mac=$(cat /sys/class/net/bond0/address)
  permB=$(grep -A6 "Slave Interface: mB" /proc/net/bonding/bond0 | sed -n 's/^Permanent HW addr: //p')
  ping -c 3 -q 10.100.0.1 >/dev/null 2>&1
  ping -c 3 -q 10.200.0.1 >/dev/null 2>&1
  t0=$(uptime_cs)
  preflight inspect --json --node vm --lldp-wait 0s --no-path-check >/dev/null 2>&1
  k plain_cs $(($(uptime_cs) - t0))
  t0=$(uptime_cs)
  preflight inspect --node vm --lldp-wait 0s 2>&1 | grep -i 'path\|->' | sed "s/^/@@K $S paths /"
  k path_cs $(($(uptime_cs) - t0))
  # mB's own address forgotten by switch B, so that the checks' frames
  # show as new entries below.
  for v in 100 200; do $BR -n swB fdb del "$permB" dev pB vlan $v master 2>/dev/null; done
  # Every forwarding-table and neighbour change while the checks run, not
  # samples: a MAC moved for a millisecond shows too.
  $BR -n swA monitor fdb >/tmp/fdbA.log 2>&1 &
  m1=$!
  $BR -n swB monitor fdb >/tmp/fdbB.log 2>&1 &
  m2=$!
  $IP -n swA monitor neigh >/tmp/neigh.log 2>&1 &
  m3=$!
  sleep 0.5
  # A positive control: the monitors do report entries.
  $BR -n swB fdb add 02:00:00:00:00:01 dev pB vlan 100 master static
  $BR -n swB fdb del 02:00:00:00:00:01 dev pB vlan 100 master static
  ping -i 0.05 -c 100000 10.100.0.1 >/tmp/flood100.log 2>&1 &
  p1=$!
  ping -i 0.05 -c 100000 10.200.0.1 >/tmp/flood200.log 2>&1 &
  p2=$!
  # 100 rounds of member checks: the agent's pipeline (inspect --watch) at
  # its shortest interval, 1 s; a round is one ARP probe per network out of
  # each member, so 200 out of mB (2 VLANs) are 100 rounds.
  printf '[agent]\nmember_path_check = "1s"\n' >/tmp/fast.toml
  timeout 170 tcpdump -Z root -i mB -c $((2 * rounds)) -w /tmp/checks.pcap "ether src $permB" >/tmp/checks.log 2>&1 &
  tc=$!
  sleep 1
  t0=$(uptime_cs)
  preflight inspect --watch --node vm -c /tmp/fast.toml >/tmp/fastwatch.log 2>/tmp/fastwatch.err &
  wp=$!
  actives=0
  while kill -0 $tc 2>/dev/null; do
    [ "$(active)" = mA ] || { actives=$((actives + 1)); k active_changed "$(active)"; }
    sleep 0.5
  done
  k rounds_cs $(($(uptime_cs) - t0))
  kill $wp
  kill -INT $p1 $p2
  wait $p1 $p2 $wp 2>/dev/null
  sleep 0.5
  kill $m1 $m2 $m3
  wait $m1 $m2 $m3 2>/dev/null
  # The bond's MAC learned on switch A's trunk or on switch B's node port:
  # a frame with it left through the backup member.
  grep -i "^$mac dev tA\|^$mac dev pB" /tmp/fdbA.log /tmp/fdbB.log | head -n 10 | sed "s/^/@@K $S move /"
  k fdb_moves "$(grep -ic "^$mac dev tA\|^$mac dev pB" /tmp/fdbA.log /tmp/fdbB.log | awk -F: '{s += $NF} END {print s + 0}')"
  # The gateways' entries for the node's addresses with another MAC.
  grep '^10\.[12]00\.0\.10 ' /tmp/neigh.log | grep lladdr | grep -iv "lladdr $mac" | head -n 10 | sed "s/^/@@K $S neigh /"
  k neigh_changes "$(grep '^10\.[12]00\.0\.10 ' /tmp/neigh.log | grep lladdr | grep -icv "lladdr $mac")"
  k rounds $(($(tcpdump -r /tmp/checks.pcap 2>/dev/null | wc -l) / 2))
  # Any finding the checks raised on a healthy bond (the watch prints one
  # line per finding that appears).
  k findings_raised "$(grep -c ' + ' /tmp/fastwatch.log)"
  grep ' + ' /tmp/fastwatch.log | head -n 5 | cut -c1-200 | sed "s/^/@@K $S last_round /"
  k active_changes "$actives"
  k flood100 "$(grep 'packets transmitted' /tmp/flood100.log)"
  k flood200 "$(grep 'packets transmitted' /tmp/flood200.log)"
  # The checks went out through mB at all: switch B learned mB's own address.
  k permB_on_pB "$(grep -ic "^$permB dev pB" /tmp/fdbB.log)"
  k monitor_control "$(grep -c '^02:00:00:00:00:01 dev pB' /tmp/fdbB.log)"
}

# VLAN 200 removed on mB's switch port while `preflight inspect --watch`
# (the agent's pipeline: path checks every agent.member_path_check, default
# 10 s) runs: how long until the finding appears, and until it clears.
agent() {
  begin agent
  n=${RIG_REMOVALS:-1}
  preflight inspect --watch --node vm >/tmp/watch.log 2>/tmp/watch.err &
  w=$!
  sleep 3 # the first evaluation (all paths up) is done
  i=0
  while [ $i -lt "$n" ]; do
    seen=$(grep -c ' + .*BOND_PORT_NO_PATH *bond0/mB' /tmp/watch.log)
    t0=$(uptime_cs)
    $BR -n swB vlan del dev pB vid 200
    j=0
    while [ $j -lt 300 ] && [ "$(grep -c ' + .*BOND_PORT_NO_PATH *bond0/mB' /tmp/watch.log)" -le "$seen" ]; do
      sleep 0.1; j=$((j + 1))
    done
    k appear_cs $(($(uptime_cs) - t0))
    seen=$(grep -c ' - .*BOND_PORT_NO_PATH *bond0/mB' /tmp/watch.log)
    t0=$(uptime_cs)
    $BR -n swB vlan add dev pB vid 200
    j=0
    while [ $j -lt 300 ] && [ "$(grep -c ' - .*BOND_PORT_NO_PATH *bond0/mB' /tmp/watch.log)" -le "$seen" ]; do
      sleep 0.1; j=$((j + 1))
    done
    k clear_cs $(($(uptime_cs) - t0))
    i=$((i + 1))
  done
  kill $w
  wait $w 2>/dev/null
  grep 'BOND_PORT_NO_PATH' /tmp/watch.log | head -n 4 | cut -c1-200 | sed "s/^/@@K $S line /"
  tail -n 3 /tmp/watch.err | sed "s/^/@@K $S stderr /"
}

scenarios() {
  begin vlan200_missing
  inspect json
  inspect_text text
  inspect no_path_check --no-path-check

  begin vlan200_allowed
  port_vlans swB pB 200
  lldp_wait mB vlan200
  inspect json
  # Full-size packets (1500 bytes, tagged) pass both switches' ports.
  pings full100 10.100.0.1 -s 1472
  pings full200 10.200.0.1 -s 1472

  # Informational: a switch that counts its maximum frame size without the
  # tag (MTU + 18, as some vendors advertise for an MTU of 1500) while it
  # does carry full-size tagged frames.
  begin mfs_untagged
  mfs swA pA 1500 18
  mfs swB pB 1500 18
  sleep 2
  inspect json
  pings full100 10.100.0.1 -s 1472
  mfs swA pA 1500
  mfs swB pB 1500

  begin single_switch
  $IP -n swB link set pB netns swA
  $IP -n swA link set pB master br0 && $IP -n swA link set pB up
  port_vlans swA pB 100 200
  wait_active mA
  sleep 1 # lldpd in swA has found pB
  mfs swA pB 1500
  lldp_wait mB switch-A
  sleep 4 # switch-B's last LLDPDU on mB expires (TTL 4 s)
  inspect json
  $IP -n swA link set pB netns swB
  $IP -n swB link set pB master br0 && $IP -n swB link set pB up
  port_vlans swB pB 100 200

  begin mtu
  $IP -n swA link set pA mtu 1400
  mfs swA pA 1400
  sleep 2 # lldpd advertises the new maximum frame size
  timeout 5 tcpdump -Z root -i mA -c 1 -w /tmp/lldp-mtu.pcap ether proto 0x88cc >/dev/null 2>&1
  [ -f /tmp/lldp-mtu.pcap ] && echo "@@PCAP mA-mtu1400 $(base64 /tmp/lldp-mtu.pcap | tr -d '\n')"
  inspect json
  pings full100 10.100.0.1 -s 1472
  pings small100 10.100.0.1
  $IP -n swA link set pA mtu 1500
  mfs swA pA 1500
  sleep 3 # the LLDPDU with MFS 1422 is replaced

  no_disturbance
  agent

  begin far_end_nothing
  $IP -n swB link set pB nomaster
  $IP -n swB link set pB up
  inspect json
  $IP -n swB link set pB master br0 && $IP -n swB link set pB up
  port_vlans swB pB 100 200

  begin failover_reveals
  $BR -n swB vlan del dev pB vid 200
  inspect json
  $IP -n swA link set pA down # the active member's cable
  wait_active mB
  pings ping100 10.100.0.1
  pings ping200 10.200.0.1
  $IP -n swA link set pA up
  wait_active mA
}

case "$1" in
  setup) setup ;;
  fixtures) fixtures ;;
  scenarios) scenarios ;;
  agent) agent ;;
  *) echo "usage: rig.sh setup|fixtures|scenarios|agent" >&2; exit 64 ;;
esac
echo "@@DONE $1"
