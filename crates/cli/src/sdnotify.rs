//! systemd notification (`Type=notify`, `WatchdogSec=`) without libsystemd:
//! datagrams to $NOTIFY_SOCKET. A no-op outside systemd.

use std::os::unix::net::UnixDatagram;

fn send(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the service is ready and starts the watchdog pings when
/// `WatchdogSec=` is set (at half the interval, from the async runtime, so a
/// wedged runtime stops the pings and systemd restarts the service).
pub fn ready() {
    send("READY=1");
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(usec) = usec.filter(|u| *u > 0) {
        let every = std::time::Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                send("WATCHDOG=1");
            }
        });
    }
}
