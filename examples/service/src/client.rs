//! A small HTTP/1 client over one keep-alive connection: what the tests and
//! the load generator talk to the service with.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The service's address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{method} {path}: {source}")]
    Http {
        /// The request's method.
        method: Method,
        /// Its path.
        path: String,
        /// What went wrong.
        source: hyper::Error,
    },
    /// The request could not be built (a malformed path).
    #[error("{method} {path}: {source}")]
    Request {
        /// The request's method.
        method: Method,
        /// Its path.
        path: String,
        /// What went wrong.
        source: hyper::http::Error,
    },
}

/// An answer: its status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection to the service; it reconnects when the service closed it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client of the service at `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_none_or(|sender| sender.is_closed()) {
            let connect = |source| ClientError::Connect {
                addr: self.addr,
                source,
            };
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(connect)?;
            stream.set_nodelay(true).map_err(connect)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| ClientError::Http {
                    method: Method::GET,
                    path: String::new(),
                    source,
                })?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        // Just set when it was missing or closed.
        self.sender.as_mut().ok_or_else(|| ClientError::Connect {
            addr: self.addr,
            source: std::io::Error::other("no connection"),
        })
    }

    /// Send `method path` with an optional JSON body.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", self.addr.to_string());
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|source| ClientError::Request {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
        let sender = self.sender().await?;
        sender.ready().await.map_err(http)?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        Ok(Response { status, body })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, ClientError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, ClientError> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&mut self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::DELETE, path, None).await
    }
}
