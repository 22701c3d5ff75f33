//! Link changes, for tests and benches that need to toggle an interface
//! without spawning `ip` (whose process start-up would blur a latency
//! measurement). preflight itself never changes the network it checks.

use futures::TryStreamExt;
use rtnetlink::LinkUnspec;

use crate::NetlinkError;

/// Sets the interface `name` administratively up or down in the current
/// network namespace.
///
/// # Errors
/// When the interface does not exist or the kernel refuses.
pub async fn set_link(name: &str, up: bool) -> Result<(), NetlinkError> {
    let what = format!("set {name} {}", if up { "up" } else { "down" });
    let err = |e: &dyn std::fmt::Display| NetlinkError::Control {
        what: what.clone(),
        message: e.to_string(),
    };
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    let conn = tokio::spawn(conn);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| err(&e))?
            .ok_or_else(|| err(&"no such interface"))?;
        let builder = LinkUnspec::new_with_index(link.header.index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        handle.link().set(msg).execute().await.map_err(|e| err(&e))
    }
    .await;
    conn.abort();
    result
}
