//! The websocket ⇄ console pumps. They start only after every check has passed (see
//! `web::console`), and end on close from either side, idle timeout, or take-over.

use super::rfb::ClientReader;
use super::sessions::{Kill, Stats};
use crate::hypervisor::{SerialConsole, SerialInput};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::{BufMut, Bytes, BytesMut};
use actix_web::HttpResponse;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// Largest websocket message accepted from the browser.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

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
    /// The user's access ended (signed out, account deleted, token revoked, role
    /// lowered) or the browser stopped reading: the pages show the reason and do not
    /// reconnect, as for [`REFUSED`].
    pub const ACCESS_ENDED: u16 = REFUSED;
}

/// How long the close frame may wait for a browser that is not reading.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

async fn close(ws: Session, code: u16, reason: &str) {
    // A close reason must fit in a control frame (123 bytes).
    let mut description: String = reason.chars().take(120).collect();
    while description.len() > 123 {
        description.pop();
    }
    let closing = ws.close(Some(CloseReason {
        code: CloseCode::Other(code),
        description: Some(description),
    }));
    let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
}

pub struct Limits {
    /// No keyboard, mouse or serial input for this long closes the session.
    pub idle: Duration,
    /// A send to the browser (or to the VM) that cannot complete for this long closes
    /// the session.
    pub stall: Duration,
}

/// The browser's end of a console session: the websocket and the messages it receives.
pub struct Browser {
    pub ws: Session,
    pub msgs: AggregatedMessageStream,
}

/// What a console pump is held to and reports to: its limits, the take-over handle of
/// its session's place, and the console counters.
pub struct Pump {
    pub limits: Limits,
    pub kill: Arc<Kill>,
    pub stats: Arc<Stats>,
}

fn idle_reason(limits: &Limits, what: &str) -> (u16, String) {
    (
        codes::IDLE,
        format!(
            "Closed after {} s without {what} (console.idle_timeout_seconds).",
            limits.idle.as_secs()
        ),
    )
}

fn stalled_browser(limits: &Limits) -> (u16, String) {
    (
        codes::ACCESS_ENDED,
        format!(
            "The browser stopped reading the console for {} s; it was closed. Reopen it.",
            limits.stall.as_secs()
        ),
    )
}

/// What the VNC pump and the response body that carries the VM's bytes share.
#[derive(Default)]
struct FromVm {
    /// Set by the pump before it sends the close frame: no VM bytes may follow it.
    closing: AtomicBool,
    bytes: AtomicU64,
}

/// The websocket response body of a VNC session: the VM's bytes, read straight into the
/// buffer that becomes the websocket frame (header included), so each chunk is copied
/// once in user space (by the HTTP layer) instead of three times through actix-ws's
/// session channel and codec. Control frames (pongs, the close frame) still come from
/// actix-ws's own body, which this one wraps.
struct VncBody<R> {
    vm: R,
    control: BoxBody,
    buf: BytesMut,
    /// Bytes asked of the next read: grows while the VM streams, shrinks when it idles,
    /// so an idle session holds a small buffer.
    read_bytes: usize,
    shared: Arc<FromVm>,
    stats: Arc<Stats>,
    /// Fired when the VNC server closes (or fails); `None` once fired.
    vm_closed: Option<oneshot::Sender<()>>,
}

/// Room for the longest server-to-client frame header (no mask).
const FRAME_HEADER_BYTES: usize = 10;
const READ_MIN_BYTES: usize = 8 * 1024;
const READ_MAX_BYTES: usize = 256 * 1024;

/// Writes a final, unmasked binary frame header for `payload_len` bytes so that it ends
/// where `buf` (`FRAME_HEADER_BYTES` long) ends; returns where the frame starts.
fn frame_header(buf: &mut [u8], payload_len: usize) -> usize {
    let start = match payload_len {
        0..=125 => {
            buf[9] = payload_len as u8;
            8
        }
        126..=0xffff => {
            buf[7] = 126;
            buf[8..10].copy_from_slice(&(payload_len as u16).to_be_bytes());
            6
        }
        _ => {
            buf[1] = 127;
            buf[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            0
        }
    };
    buf[start] = 0x82;
    start
}

impl<R: AsyncRead + Unpin> MessageBody for VncBody<R> {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        // Pongs and the close frame first; when actix-ws's body ends, so does this one.
        match Pin::new(&mut this.control).poll_next(cx) {
            Poll::Ready(Some(chunk)) => return Poll::Ready(Some(chunk)),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.vm_closed.is_none() || this.shared.closing.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        if this.buf.is_empty() {
            this.buf.reserve(FRAME_HEADER_BYTES + this.read_bytes);
            this.buf.put_bytes(0, FRAME_HEADER_BYTES);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.vm), cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                if let Some(tx) = this.vm_closed.take() {
                    let _ = tx.send(());
                }
                this.buf = BytesMut::new();
                // The pump answers with a close frame, which `control` delivers.
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                this.read_bytes = if n >= this.read_bytes {
                    (this.read_bytes * 2).min(READ_MAX_BYTES)
                } else if n < this.read_bytes / 4 {
                    (this.read_bytes / 2).max(READ_MIN_BYTES)
                } else {
                    this.read_bytes
                };
                this.shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                this.stats
                    .bytes_from_vm
                    .fetch_add(n as u64, Ordering::Relaxed);
                let mut frame = this.buf.split();
                let start = frame_header(&mut frame[..FRAME_HEADER_BYTES], n);
                Poll::Ready(Some(Ok(frame.freeze().slice(start..))))
            }
        }
    }
}

/// Pumps RFB bytes between the browser and the VNC server: puts the VM's side into
/// `response`'s body and returns the response to send plus the pump for the browser's
/// side, which ends the session.
pub fn vnc<R, W>(
    response: HttpResponse,
    browser: Browser,
    (vm_rd, vm_wr): (R, W),
    view_only: bool,
    pump: Pump,
) -> (HttpResponse, impl std::future::Future<Output = Ended>)
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let shared = Arc::new(FromVm::default());
    let (vm_closed_tx, vm_closed) = oneshot::channel();
    let body_shared = shared.clone();
    let body_stats = pump.stats.clone();
    let response = response.map_body(move |_, control| {
        BoxBody::new(VncBody {
            vm: vm_rd,
            control,
            buf: BytesMut::new(),
            read_bytes: READ_MIN_BYTES,
            shared: body_shared,
            stats: body_stats,
            vm_closed: Some(vm_closed_tx),
        })
    });
    let pump = vnc_from_browser(browser, (vm_wr, vm_closed), shared, view_only, pump);
    (response, pump)
}

/// The browser's side of a VNC session: its input to the VM (`wr`) until the browser,
/// the VM (`vm_closed`, fired by the response body), the idle timeout or a take-over
/// ends it.
async fn vnc_from_browser<W: AsyncWrite + Unpin>(
    browser: Browser,
    (mut wr, mut vm_closed): (W, oneshot::Receiver<()>),
    shared: Arc<FromVm>,
    view_only: bool,
    pump: Pump,
) -> Ended {
    let Browser { mut ws, mut msgs } = browser;
    let Pump {
        limits,
        kill,
        stats,
    } = pump;
    const VM_GONE: &str = "The VNC server closed the connection: the VM stopped or restarted.";
    let mut reader = ClientReader::new(view_only);
    let idle = tokio::time::sleep(limits.idle);
    tokio::pin!(idle);
    let mut to_vm = 0u64;
    let (code, reason) = loop {
        tokio::select! {
            msg = msgs.recv() => match msg {
                Some(Ok(AggregatedMessage::Binary(data))) => {
                    let f = match reader.feed(&data) {
                        Ok(f) => f,
                        Err(e) => break (codes::REFUSED, e.to_string()),
                    };
                    // Input a view-only session drops is no activity.
                    if f.input && !view_only {
                        idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                    }
                    if !f.forward.is_empty() {
                        let wrote = tokio::select! {
                            w = tokio::time::timeout(limits.stall, wr.write_all(&f.forward)) => w,
                            _ = &mut idle => break idle_reason(&limits, "keyboard or mouse input"),
                            r = kill.fired() => break r,
                        };
                        match wrote {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break (codes::VM_GONE, VM_GONE.into()),
                            Err(_) => break (codes::VM_GONE, format!(
                                "The VNC server did not take input for {} s; the console was closed.",
                                limits.stall.as_secs()
                            )),
                        }
                        to_vm += f.forward.len() as u64;
                        stats.bytes_to_vm.fetch_add(f.forward.len() as u64, Ordering::Relaxed);
                    }
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    match tokio::time::timeout(limits.stall, ws.pong(&p)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break (1000, "The browser went away.".into()),
                        Err(_) => break stalled_browser(&limits),
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Text(_))) => {
                    break (codes::REFUSED, "The VNC console takes binary messages only.".into())
                }
                Some(Ok(AggregatedMessage::Close(_))) | None => break (1000, "The console was closed in the browser.".into()),
                Some(Err(e)) => break (codes::REFUSED, format!("The websocket failed: {e}.")),
            },
            closed = &mut vm_closed => match closed {
                Ok(()) => break (codes::VM_GONE, VM_GONE.into()),
                // The response body was dropped: the connection to the browser is gone.
                Err(_) => break (1000, "The browser went away.".into()),
            },
            _ = &mut idle => break idle_reason(&limits, "keyboard or mouse input"),
            r = kill.fired() => break r,
        }
    };
    shared.closing.store(true, Ordering::SeqCst);
    close(ws, code, &reason).await;
    Ended {
        reason,
        bytes_to_vm: to_vm,
        bytes_from_vm: shared.bytes.load(Ordering::Relaxed),
    }
}

/// Pumps a serial console (libvirt stream) to and from the browser.
/// The most serial output sent in one websocket frame.
const SERIAL_FRAME_MAX_BYTES: usize = 64 * 1024;

/// `first` followed by the output chunks already waiting, until the total reaches
/// `max_bytes` (it passes it by less than one chunk).
fn coalesce_output(
    first: Vec<u8>,
    output: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    max_bytes: usize,
) -> Vec<u8> {
    let mut data = first;
    while data.len() < max_bytes {
        match output.try_recv() {
            Ok(next) => data.extend_from_slice(&next),
            Err(_) => break,
        }
    }
    data
}

pub async fn serial(browser: Browser, console: SerialConsole, pump: Pump) -> Ended {
    let Browser { mut ws, mut msgs } = browser;
    let Pump {
        limits,
        kill,
        stats,
    } = pump;
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
                        match tokio::time::timeout(limits.stall, ws.pong(&p)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break (1000, "The browser went away.".into()),
                            Err(_) => break stalled_browser(&limits),
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
                Some(first) => {
                    // What else is already waiting goes in the same frame: a flooding
                    // guest gives many small reads, and a frame each costs the browser more
                    // than the bytes.
                    let data = coalesce_output(first, &mut output, SERIAL_FRAME_MAX_BYTES);
                    // Room again: a reader paused on a full channel may go on.
                    input.output_taken();
                    let n = data.len() as u64;
                    // A browser that does not read must not hold up the idle timeout,
                    // a take-over or a close: wait for the send beside them, bounded.
                    let sent = tokio::select! {
                        sent = tokio::time::timeout(limits.stall, ws.binary(data)) => sent,
                        _ = &mut idle => break idle_reason(&limits, "input"),
                        r = kill.fired() => break r,
                    };
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break (1000, "The browser went away.".into()),
                        Err(_) => break stalled_browser(&limits),
                    }
                    from_vm += n;
                    stats.bytes_from_vm.fetch_add(n, Ordering::Relaxed);
                }
                None => break (codes::VM_GONE, "The serial console closed: the VM stopped or restarted, or someone took the console over.".into()),
            },
            _ = &mut idle => break idle_reason(&limits, "input"),
            r = kill.fired() => break r,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: usize) -> Vec<u8> {
        let mut buf = [0u8; FRAME_HEADER_BYTES];
        let start = frame_header(&mut buf, payload_len);
        buf[start..].to_vec()
    }

    #[test]
    fn waiting_serial_output_goes_out_in_one_frame_up_to_the_limit() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for chunk in [b"bb".to_vec(), b"cc".to_vec(), b"dd".to_vec()] {
            tx.try_send(chunk).unwrap();
        }
        // All that waits, in order.
        assert_eq!(coalesce_output(b"aa".to_vec(), &mut rx, 100), b"aabbccdd");
        // Nothing waits: the first chunk alone.
        assert_eq!(coalesce_output(b"ee".to_vec(), &mut rx, 100), b"ee");
        // The limit stops taking; the rest stays, in order, for the next frame.
        for chunk in [b"ff".to_vec(), b"gg".to_vec(), b"hh".to_vec()] {
            tx.try_send(chunk).unwrap();
        }
        assert_eq!(coalesce_output(b"ee".to_vec(), &mut rx, 4), b"eeff");
        assert_eq!(rx.try_recv().unwrap(), b"gg");
        // A closed channel ends the frame too.
        drop(tx);
        assert_eq!(coalesce_output(b"ii".to_vec(), &mut rx, 100), b"iihh");
    }

    #[test]
    fn frame_headers_use_the_shortest_length_encoding() {
        assert_eq!(header(0), [0x82, 0]);
        assert_eq!(header(125), [0x82, 125]);
        assert_eq!(header(126), [0x82, 126, 0, 126]);
        assert_eq!(header(0xffff), [0x82, 126, 0xff, 0xff]);
        assert_eq!(header(0x1_0000), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(header(READ_MAX_BYTES), [0x82, 127, 0, 0, 0, 0, 0, 4, 0, 0]);
    }
}
