//! The CRI connection: a `runtime.v1` RuntimeService client over a CRI daemon's Unix socket
//! (containerd's `containerd.sock`, which serves the CRI plugin beside containerd's own API).
//!
//! Owns the channel and the per-call deadline; knows nothing of pods or containers (main.rs
//! builds the requests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Errors of connecting to the CRI socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (missing, refused, or the daemon did not answer).
    #[error("cannot connect to the CRI socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A RuntimeService client whose every call fails after `deadline`.
pub type Runtime = RuntimeServiceClient<Channel>;

/// Connects to the CRI daemon at `socket`. Every RPC on the returned client is bounded by
/// `deadline` (tonic's per-request timeout, reported as `Cancelled`/`DeadlineExceeded`).
pub async fn connect(socket: &Path, deadline: Duration) -> Result<Runtime, ClientError> {
    let path = socket.to_path_buf();
    // The authority is unused: the connector below ignores the URI and dials the socket.
    let channel = Endpoint::from_static("http://[::1]:0")
        .connect_timeout(Duration::from_secs(10))
        .timeout(deadline)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    // containerd answers CRI messages of a few MiB at most (ListContainers of a big node);
    // exec output is bounded by what the test asks for.
    Ok(RuntimeServiceClient::new(channel).max_decoding_message_size(64 << 20))
}
