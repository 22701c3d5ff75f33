# shellcheck shell=bash
# Boots the systemd VM image (tests/vm/systemd-image.sh) and talks to it:
# source this file, then
#   vm_boot            boot (qemu TCG, 3 virtio NICs or PREFLIGHT_VM_NICS, user networking with
#                      restrict=on, hostfwd of sshd/9100/9101 on the first)
#                      and wait for SSH; or vm_start, other work, vm_wait
#   vm_ssh CMD...      run a command as root over SSH (stdin passed through)
#   vm_scp SRC... DST  copy files into the VM (DST in the VM)
#   vm_link N on|off   plug or pull NIC N's cable (qemu monitor set_link)
#   vm_stop            power off (kills qemu after 30 s)
# After vm_boot: VM_DIR (console.log, mon.sock), VM_SSH_PORT, VM_AGG_PORT
# (host port of the guest's 9100), VM_AGENT_PORT (9101), VM_KEY, VM_IMAGE_DIR.
# Nothing in the VM can reach beyond qemu's user network (restrict=on).

vm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

VM_SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o ConnectTimeout=5 -o BatchMode=yes -o ServerAliveInterval=5)

vm_boot() { vm_start && vm_wait; }

vm_start() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  VM_IMAGE_DIR=$(bash "$here/systemd-image.sh" | tail -n1)
  VM_KEY="$VM_IMAGE_DIR/id_ed25519"
  VM_DIR=$(mktemp -d /tmp/preflight-sysvm.XXXXXX)
  VM_SSH_PORT=$(vm_free_port)
  VM_AGG_PORT=$(vm_free_port)
  VM_AGENT_PORT=$(vm_free_port)
  # KVM hung at boot on this kind of machine (docs: /work/shared/vm-harness.md);
  # PREFLIGHT_VM_ACCEL=kvm opts in where it works.
  local accel=${PREFLIGHT_VM_ACCEL:-tcg}
  # PREFLIGHT_VM_NICS=N (default 3): NICs nic3.. beyond the image's three,
  # no link partner, MAC 52:54:00:ab:cd:NN (unconfigured in the image).
  local extra=() i
  for ((i = 3; i < ${PREFLIGHT_VM_NICS:-3}; i++)); do
    extra+=(-netdev "user,id=n$i,restrict=on"
      -device "virtio-net-pci,netdev=n$i,id=nic$i,romfile=,speed=10000,duplex=full,mac=52:54:00:ab:cd:$(printf %02x "$i")")
  done
  VM_T0=$SECONDS
  # snapshot=on: the cached image is never written; the VM's writes go to a
  # temporary overlay that is gone with qemu.
  qemu-system-x86_64 -accel "$accel" -m 1024 -smp 2 -display none -no-reboot \
    -kernel "$VM_IMAGE_DIR/vmlinuz" -initrd "$VM_IMAGE_DIR/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet panic=-1" \
    -drive "file=$VM_IMAGE_DIR/rootfs.img,if=virtio,format=raw,snapshot=on" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$VM_SSH_PORT-:22,hostfwd=tcp:127.0.0.1:$VM_AGG_PORT-:9100,hostfwd=tcp:127.0.0.1:$VM_AGENT_PORT-:9101" \
    -device virtio-net-pci,netdev=n0,id=nic0,romfile=,speed=10000,duplex=full \
    -netdev user,id=n1,restrict=on -device virtio-net-pci,netdev=n1,id=nic1,romfile=,speed=10000,duplex=full \
    -netdev user,id=n2,restrict=on -device virtio-net-pci,netdev=n2,id=nic2,romfile=,speed=10000,duplex=full \
    "${extra[@]}" \
    -serial "file:$VM_DIR/console.log" -monitor "unix:$VM_DIR/mon.sock,server,nowait" \
    -pidfile "$VM_DIR/qemu.pid" -daemonize
}

vm_wait() {
  local deadline=$((SECONDS + ${PREFLIGHT_VM_BOOT_TIMEOUT:-240}))
  until vm_ssh true 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$VM_DIR/qemu.pid")" 2>/dev/null; then
      echo "vm: no SSH after $((SECONDS - VM_T0)) s; console:" >&2
      tail -n 60 "$VM_DIR/console.log" >&2
      return 1
    fi
    sleep 2
  done
  echo "vm: booted to SSH in $((SECONDS - VM_T0)) s" >&2
}

vm_ssh() {
  ssh "${VM_SSH_OPTS[@]}" -i "$VM_KEY" -p "$VM_SSH_PORT" root@127.0.0.1 "$@"
}

vm_scp() {
  local dst=${*: -1}
  scp -q "${VM_SSH_OPTS[@]}" -i "$VM_KEY" -P "$VM_SSH_PORT" "${@:1:$#-1}" "root@127.0.0.1:$dst"
}

vm_monitor() {
  python3 - "$VM_DIR/mon.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
def prompt():
    buf = b""
    while b"(qemu) " not in buf:
        chunk = s.recv(4096)
        if not chunk: break
        buf += chunk
    return buf
prompt(); s.sendall(sys.argv[2].encode() + b"\n"); out = prompt()
sys.stdout.write(out.decode(errors="replace").split("\n", 1)[-1].replace("(qemu) ", ""))
PY
}

vm_link() { vm_monitor "set_link nic$1 $2" >/dev/null; }

vm_stop() {
  [ -n "${VM_DIR:-}" ] && [ -f "$VM_DIR/qemu.pid" ] || return 0
  local pid
  pid=$(cat "$VM_DIR/qemu.pid")
  vm_monitor system_powerdown >/dev/null 2>&1 || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill "$pid" 2>/dev/null || true
  rm -rf "$VM_DIR"
}
