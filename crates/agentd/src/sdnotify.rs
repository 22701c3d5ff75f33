//! systemd notification (`Type=notify`, `WatchdogSec=`) through the
//! `sd-notify` crate: READY=1 when serving, watchdog pings while the async
//! runtime runs, STOPPING=1 on shutdown. A no-op outside systemd.

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>) {
    // `false`: keep NOTIFY_SOCKET, later messages (watchdog, stopping) need it.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the service is ready and starts the watchdog pings when
/// `WatchdogSec=` is set for this process (`WATCHDOG_PID` checked by the
/// crate), at half the interval, from the async runtime, so a wedged
/// runtime stops the pings and systemd restarts the service.
pub fn ready() {
    send(NotifyState::Ready);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = std::time::Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                send(NotifyState::Watchdog);
            }
        });
    }
}

/// Tells systemd the service is shutting down (so a slow stop is not taken
/// for a hang).
pub fn stopping() {
    send(NotifyState::Stopping);
}
