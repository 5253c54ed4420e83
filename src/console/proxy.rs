//! The websocket ⇄ console pumps. They start only after every check has passed (see
//! `web::console`), and end on close from either side, idle timeout, or take-over.

use super::rfb::ClientReader;
use super::sessions::{Kill, Stats};
use crate::hypervisor::{SerialConsole, SerialInput};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest websocket message accepted from the browser.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Read size towards the VNC server.
const READ_BUF_BYTES: usize = 64 * 1024;

/// How a session ended, for the audit log and the browser.
#[derive(Debug)]
pub struct Ended {
    /// A sentence for the user (also sent as the websocket close reason, shortened).
    pub reason: String,
    pub bytes_to_vm: u64,
    pub bytes_from_vm: u64,
}

/// Close codes the browser pages understand (4000–4999 are for applications).
pub mod codes {
    /// The VM went away (shut down, rebooted, crashed): reconnect when it is back.
    pub const VM_GONE: u16 = 4001;
    /// Another user took the console over.
    pub const TAKEN_OVER: u16 = 4002;
    /// Closed for inactivity.
    pub const IDLE: u16 = 4003;
    /// The client broke the protocol, or a view-only rule.
    pub const REFUSED: u16 = 4004;
}

async fn close(ws: Session, code: u16, reason: &str) {
    // A close reason must fit in a control frame (123 bytes).
    let mut description: String = reason.chars().take(120).collect();
    while description.len() > 123 {
        description.pop();
    }
    let _ = ws
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(description),
        }))
        .await;
}

pub struct Limits {
    pub idle: Duration,
}

/// Pumps RFB bytes between the browser and the VNC server.
pub async fn vnc<S>(
    mut ws: Session,
    mut msgs: AggregatedMessageStream,
    server: S,
    view_only: bool,
    limits: Limits,
    kill: Arc<Kill>,
    stats: Arc<Stats>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(server);
    let mut reader = ClientReader::new(view_only);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let idle = tokio::time::sleep(limits.idle);
    tokio::pin!(idle);
    let (mut to_vm, mut from_vm) = (0u64, 0u64);
    let (code, reason) = loop {
        tokio::select! {
            msg = msgs.recv() => match msg {
                Some(Ok(AggregatedMessage::Binary(data))) => {
                    let f = match reader.feed(&data) {
                        Ok(f) => f,
                        Err(e) => break (codes::REFUSED, e.to_string()),
                    };
                    if f.input {
                        idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                    }
                    if !f.forward.is_empty() {
                        if wr.write_all(&f.forward).await.is_err() {
                            break (codes::VM_GONE, "The VNC server closed the connection: the VM stopped or restarted.".into());
                        }
                        to_vm += f.forward.len() as u64;
                        stats.bytes_to_vm.fetch_add(f.forward.len() as u64, Ordering::Relaxed);
                    }
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if ws.pong(&p).await.is_err() {
                        break (1000, "The browser went away.".into());
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Text(_))) => {
                    break (codes::REFUSED, "The VNC console takes binary messages only.".into())
                }
                Some(Ok(AggregatedMessage::Close(_))) | None => break (1000, "The console was closed in the browser.".into()),
                Some(Err(e)) => break (codes::REFUSED, format!("The websocket failed: {e}.")),
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break (codes::VM_GONE, "The VNC server closed the connection: the VM stopped or restarted.".into()),
                Ok(n) => {
                    if ws.binary(buf[..n].to_vec()).await.is_err() {
                        break (1000, "The browser went away.".into());
                    }
                    from_vm += n as u64;
                    stats.bytes_from_vm.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            _ = &mut idle => break (codes::IDLE, format!(
                "Closed after {} s without keyboard or mouse input (console.idle_timeout_seconds).",
                limits.idle.as_secs()
            )),
            r = kill.fired() => break (codes::TAKEN_OVER, r),
        }
    };
    close(ws, code, &reason).await;
    Ended {
        reason,
        bytes_to_vm: to_vm,
        bytes_from_vm: from_vm,
    }
}

/// Pumps a serial console (libvirt stream) to and from the browser.
pub async fn serial(
    mut ws: Session,
    mut msgs: AggregatedMessageStream,
    console: SerialConsole,
    limits: Limits,
    kill: Arc<Kill>,
    stats: Arc<Stats>,
) -> Ended {
    let SerialConsole { mut output, input } = console;
    let input: Arc<dyn SerialInput> = Arc::from(input);
    let idle = tokio::time::sleep(limits.idle);
    tokio::pin!(idle);
    let (mut to_vm, mut from_vm) = (0u64, 0u64);
    let (code, reason) = loop {
        tokio::select! {
            msg = msgs.recv() => {
                let data = match msg {
                    Some(Ok(AggregatedMessage::Binary(d))) => d.to_vec(),
                    Some(Ok(AggregatedMessage::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(AggregatedMessage::Ping(p))) => {
                        if ws.pong(&p).await.is_err() {
                            break (1000, "The browser went away.".into());
                        }
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Close(_))) | None => break (1000, "The console was closed in the browser.".into()),
                    Some(Err(e)) => break (codes::REFUSED, format!("The websocket failed: {e}.")),
                };
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                let n = data.len() as u64;
                let writer = input.clone();
                let wrote = tokio::task::spawn_blocking(move || writer.write_all(&data)).await;
                match wrote {
                    Ok(Ok(())) => {
                        to_vm += n;
                        stats.bytes_to_vm.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => break (codes::VM_GONE, format!("Writing to the serial console failed: {e}.")),
                    Err(e) => break (codes::VM_GONE, format!("Writing to the serial console failed: {e}.")),
                }
            },
            out = output.recv() => match out {
                Some(data) => {
                    let n = data.len() as u64;
                    if ws.binary(data).await.is_err() {
                        break (1000, "The browser went away.".into());
                    }
                    from_vm += n;
                    stats.bytes_from_vm.fetch_add(n, Ordering::Relaxed);
                }
                None => break (codes::VM_GONE, "The serial console closed: the VM stopped or restarted, or someone took the console over.".into()),
            },
            _ = &mut idle => break (codes::IDLE, format!(
                "Closed after {} s without input (console.idle_timeout_seconds).",
                limits.idle.as_secs()
            )),
            r = kill.fired() => break (codes::TAKEN_OVER, r),
        }
    };
    // Detach from libvirt (a blocking call) before telling the browser.
    drop(output);
    let _ = tokio::task::spawn_blocking(move || drop(input)).await;
    close(ws, code, &reason).await;
    Ended {
        reason,
        bytes_to_vm: to_vm,
        bytes_from_vm: from_vm,
    }
}
