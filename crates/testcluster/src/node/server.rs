//! The kubelet API over TLS on 127.0.0.1, which the API server proxies to: exec (the
//! WebSocket channel protocols v5.channel.k8s.io and v4.channel.k8s.io) and container
//! logs (follow, tailLines, previous, limitBytes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Node;
use super::pod::spawn_exec;

pub(crate) fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut key_pem.as_bytes())?.context("no private key in PEM")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

pub async fn start(node: Arc<Node>) -> Result<(u16, JoinHandle<()>)> {
    let cert = &node.cfg.kubelet_cert;
    let tls = tls_config(&cert.cert_pem, &cert.key_pem, &[b"http/1.1"])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the kubelet port")?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs))
        .with_state(node);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok((port, task))
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.as_str()),
        Some("1") | Some("true") | Some("True")
    )
}

fn err(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

async fn exec(
    State(node): State<Arc<Node>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let params = parse_query(q.as_deref());
    let command: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let flags: HashMap<String, String> =
        params.into_iter().filter(|(k, _)| k != "command").collect();
    let stdin = truthy(flags.get("input")) || truthy(flags.get("stdin"));
    let Ok(ws) = ws else {
        return err(
            StatusCode::BAD_REQUEST,
            "the simulated kubelet speaks only the WebSocket exec protocols v5.channel.k8s.io and v4.channel.k8s.io (no SPDY)".into(),
        );
    };
    let Some(rt) = node.find_pod(&ns, &pod) else {
        return err(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let running = rt.running(&container);
    let ws = ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    let v5 = ws
        .selected_protocol()
        .is_some_and(|p| p.as_bytes() == b"v5.channel.k8s.io");
    ws.on_upgrade(move |socket| async move {
        let child = running
            .map_err(anyhow::Error::msg)
            .and_then(|(pid, env, wd)| spawn_exec(pid, &env, &wd, &command, stdin));
        exec_session(socket, child, command, v5).await;
    })
}

fn status_message(code: Option<i32>, command: &[String], error: Option<String>) -> String {
    let v = match (error, code) {
        (Some(e), _) => {
            serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError",
                            "details": {"causes": [{"message": e}]}, "code": 500})
        }
        (None, Some(0)) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (None, code) => {
            let code = code.unwrap_or(137);
            serde_json::json!({"metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
        }
    };
    v.to_string()
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

async fn exec_session(
    socket: WebSocket,
    child: Result<tokio::process::Child>,
    command: Vec<String>,
    v5: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = sink
                .send(frame(
                    3,
                    status_message(None, &command, Some(format!("{e:#}"))).as_bytes(),
                ))
                .await;
            let _ = sink
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        // A normal closure (1000): kubectl treats a close without status as an error.
        let close = axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    let mut pumps = Vec::new();
    for (chan, reader) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(mut reader) = reader else { continue };
        let tx = tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(frame(chan, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    let mut stdin = child.stdin.take();
    let pid = child.id().map(|p| p as i32);
    let input = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => return true,
                _ => continue,
            };
            let Some((&chan, payload)) = data.split_first() else {
                continue;
            };
            match chan {
                0 => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(payload).await.is_err()
                    {
                        stdin = None;
                    }
                }
                255 if v5 && payload.first() == Some(&0) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        true
    });
    let status = tokio::select! {
        st = child.wait() => st.ok(),
        _ = input => {
            // The client went away: end the command.
            if let Some(pid) = pid { crate::process::kill_group(pid, libc::SIGKILL); }
            child.wait().await.ok()
        }
    };
    for p in pumps {
        let _ = p.await;
    }
    if let Some(pid) = pid {
        crate::process::kill_group(pid, libc::SIGKILL);
    }
    let code = status.and_then(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().or_else(|| s.signal().map(|sig| 128 + sig))
    });
    let _ = tx
        .send(frame(3, status_message(code, &command, None).as_bytes()))
        .await;
    drop(tx);
    let _ = writer.await;
}

async fn logs(
    State(node): State<Arc<Node>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let flags: HashMap<String, String> = parse_query(q.as_deref()).into_iter().collect();
    let follow = truthy(flags.get("follow"));
    let previous = truthy(flags.get("previous"));
    let tail: Option<usize> = flags.get("tailLines").and_then(|v| v.parse().ok());
    let limit: Option<u64> = flags.get("limitBytes").and_then(|v| v.parse().ok());
    let Some(rt) = node.find_pod(&ns, &pod) else {
        return err(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let container = if container.is_empty() {
        rt.default_container().unwrap_or_default()
    } else {
        container
    };
    let (path, running) = match rt.log_file(&container, previous) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    let content = tokio::fs::read(&path).await.unwrap_or_default();
    let mut start = 0usize;
    if let Some(n) = tail {
        let mut count = 0;
        let mut idx = content.len();
        let body = if content.ends_with(b"\n") {
            &content[..content.len() - 1]
        } else {
            &content[..]
        };
        idx = idx.min(body.len());
        start = 0;
        while idx > 0 {
            if body[idx - 1] == b'\n' {
                count += 1;
                if count == n {
                    start = idx;
                    break;
                }
            }
            idx -= 1;
        }
        if n == 0 {
            start = content.len();
        }
    }
    let initial = content[start..].to_vec();
    let initial_len = content.len() as u64;
    if !follow || !running {
        let mut out = initial;
        if let Some(l) = limit {
            out.truncate(l as usize);
        }
        return Response::new(Body::from(out));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut sent = initial.len() as u64;
        if tx.send(Ok(Bytes::from(initial))).await.is_err() {
            return;
        }
        let Ok(mut f) = tokio::fs::File::open(&path).await else {
            return;
        };
        let mut pos = initial_len;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let still = matches!(rt.log_file(&container, false), Ok((p, true)) if p == path);
            if f.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
                return;
            }
            loop {
                match f.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pos += n as u64;
                        let mut chunk = &buf[..n];
                        if let Some(l) = limit {
                            let left = l.saturating_sub(sent) as usize;
                            chunk = &chunk[..chunk.len().min(left)];
                        }
                        sent += chunk.len() as u64;
                        if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                            return;
                        }
                        if limit.is_some_and(|l| sent >= l) {
                            return;
                        }
                    }
                }
            }
            if !still {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}
