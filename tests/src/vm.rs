//! qemu VMs with a real kernel (see vm-harness).
