//! Dialling a broker and the handshake: TCP connect within `connect_timeout`,
//! HELLO, then WELCOME (or the broker's ERROR as [`ClientError::Handshake`]).

use bytes::BytesMut;
use bytestring::ByteString;
use tern_proto::{codec, ErrorCode, Frame, Hello, Welcome, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::error::ClientError;
use crate::options::ClientOptions;

/// The byte stream to the broker: TCP, or TLS over TCP.
pub(super) enum BrokerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS ([`crate::TlsOptions`]).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl BrokerStream {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            BrokerStream::Plain(stream) => stream.write_all(bytes).await,
            BrokerStream::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    async fn read_buf(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            BrokerStream::Plain(stream) => stream.read_buf(buffer).await,
            BrokerStream::Tls(stream) => stream.read_buf(buffer).await,
        }
    }
}

/// A connected, handshaken socket.
pub(super) struct Established {
    pub(super) stream: BrokerStream,
    pub(super) welcome: Welcome,
    pub(super) leftover: BytesMut,
}

/// Connects and performs the handshake.
pub(super) async fn open(
    address: &str,
    options: &ClientOptions,
) -> Result<Established, ClientError> {
    match open_with(address, options, PROTOCOL_VERSION).await {
        // A broker that only speaks version 1: ask again for that (without
        // SUBSCRIBE_FILTERED).
        Err(ClientError::Handshake { code, .. })
            if code == ErrorCode::UnsupportedVersion.as_u16() && PROTOCOL_VERSION > 1 =>
        {
            open_with(address, options, 1).await
        }
        other => other,
    }
}

async fn open_with(
    address: &str,
    options: &ClientOptions,
    version: u16,
) -> Result<Established, ClientError> {
    let connect = timeout(options.connect_timeout, TcpStream::connect(address)).await;
    let stream = match connect {
        Err(_) => return Err(ClientError::Timeout),
        Ok(Err(source)) => {
            return Err(ClientError::Connect {
                address: address.to_owned(),
                source,
            })
        }
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true)?;
    let mut stream = match &options.tls {
        None => BrokerStream::Plain(stream),
        Some(tls) => {
            let handshake = timeout(options.connect_timeout, tls.connect(address, stream));
            BrokerStream::Tls(Box::new(
                handshake.await.map_err(|_| ClientError::Timeout)??,
            ))
        }
    };
    let hello = Frame::Hello(Hello {
        version,
        role: options.role,
        client_name: ByteString::from(options.name.as_str()),
        auth_token: ByteString::from(options.auth_token.as_str()),
    });
    stream.write_all(&hello.to_bytes()?).await?;
    let mut buffer = BytesMut::with_capacity(1024);
    let welcome = timeout(
        options.connect_timeout,
        read_welcome(&mut stream, &mut buffer),
    )
    .await
    .map_err(|_| ClientError::Timeout)??;
    Ok(Established {
        stream,
        welcome,
        leftover: buffer,
    })
}

async fn read_welcome(
    stream: &mut BrokerStream,
    buffer: &mut BytesMut,
) -> Result<Welcome, ClientError> {
    loop {
        if let Some(frame) = codec::decode(buffer, tern_proto::DEFAULT_MAX_FRAME_BYTES)? {
            return match frame {
                Frame::Welcome(welcome) => Ok(welcome),
                Frame::Error(error) => Err(ClientError::Handshake {
                    code: error.code,
                    message: error.message.to_string(),
                }),
                other => Err(ClientError::Handshake {
                    code: ErrorCode::UnexpectedFrame.as_u16(),
                    message: format!("expected WELCOME, got {:?}", other.opcode()),
                }),
            };
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(ClientError::Disconnected);
        }
    }
}
