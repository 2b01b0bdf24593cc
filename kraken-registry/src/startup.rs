//! What every service does first, with errors that name what failed: preparing its data
//! directory and binding its listeners.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Creates `path` if needed and checks that files can be made in it, so that a missing
/// mount or a read-only directory is reported with its path before anything starts.
pub(crate) fn data_dir(path: &Path) -> Result<()> {
    let fail = |source| Error::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(fail)?;
    let probe = path.join(format!(".kraken-write-test-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Binds the `what` listener (`"agent registry"`, `"origin"`) on `addr`.
pub(crate) async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Names the peer listener's address in a failure to start a P2P node on it.
pub(crate) fn node_error(addr: SocketAddr) -> impl FnOnce(kraken_p2p::Error) -> Error {
    move |source| Error::Node { addr, source }
}
