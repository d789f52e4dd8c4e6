//! Reading and answering the RPCs agents send on typed streams. An RPC request is one JSON
//! value with no FIN after it, so it is parsed as it arrives; the answer is one JSON value
//! followed by FIN, without which the SDK waits forever.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest RPC request accepted, in bytes. A Bind with every middleware configured is a few
/// KiB; this leaves room for long traffic policies.
pub const MAX_RPC_BYTES: usize = 64 * 1024;

/// Reading an RPC request failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Over [`MAX_RPC_BYTES`].
    #[error("request larger than {MAX_RPC_BYTES} bytes")]
    TooLarge,
    /// Not JSON, or not the expected shape.
    #[error("malformed request: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The stream ended before a whole value arrived.
    #[error("stream ended mid-request")]
    Truncated,
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one JSON value of type `T` from `stream`, as soon as it is complete.
pub async fn read_request<T, R>(stream: &mut R) -> Result<T, RpcError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(RpcError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RPC_BYTES {
            return Err(RpcError::TooLarge);
        }
        match serde_json::Deserializer::from_slice(&buf)
            .into_iter::<T>()
            .next()
        {
            Some(Ok(value)) => return Ok(value),
            Some(Err(e)) if e.is_eof() => continue,
            Some(Err(e)) => return Err(e.into()),
            None => continue,
        }
    }
}

/// Writes `response` and half-closes the stream.
pub async fn respond<T, W>(stream: &mut W, response: &T) -> std::io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let json = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    stream.write_all(&json).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_a_value_split_across_reads_without_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            a.write_all(br#"{"Version":["3","2"],"#).await.unwrap();
            a.write_all(br#""ClientId":"x"}"#).await.unwrap();
            // No shutdown: the reader must not wait for EOF.
            a
        });
        let auth: crate::proto::Auth = read_request(&mut b).await.unwrap();
        assert_eq!((auth.version.len(), auth.client_id.as_str()), (2, "x"));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_requests() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        // An unterminated string: valid so far, so only the size limit can stop it.
        a.write_all(b"[\"").await.unwrap();
        a.write_all(&vec![b'a'; MAX_RPC_BYTES + 10]).await.unwrap();
        let err = read_request::<serde_json::Value, _>(&mut b)
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::TooLarge));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"{\"Version\": 5}").await.unwrap();
        let err = read_request::<crate::proto::Auth, _>(&mut b)
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Malformed(_)));
    }
}
