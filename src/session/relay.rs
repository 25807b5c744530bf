//! Moving bytes both ways once a session is set up, until either side closes.

use tokio::io::{AsyncWriteExt, copy_bidirectional};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use bytes::BytesMut;

use crate::backend::Connection;

/// How a relay ended.
pub struct Outcome {
    pub from_client: u64,
    pub to_client: u64,
    pub reason: &'static str,
}

/// Sends the greeting, then relays until one side closes or pgvalet shuts down.
pub async fn run(
    mut client: TlsStream<TcpStream>,
    backend: Connection,
    greeting: BytesMut,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut stream = backend.stream;
    let sent = async {
        client.write_all(&greeting).await?;
        client.flush().await
    };
    if sent.await.is_err() {
        return Outcome {
            from_client: 0,
            to_client: 0,
            reason: "client_gone",
        };
    }
    tokio::select! {
        copied = copy_bidirectional(&mut client, &mut stream) => match copied {
            Ok((from_client, to_client)) => Outcome { from_client, to_client, reason: "closed" },
            Err(_) => Outcome { from_client: 0, to_client: 0, reason: "io_error" },
        },
        () = shutdown.cancelled() => Outcome { from_client: 0, to_client: 0, reason: "shutdown" },
    }
}
