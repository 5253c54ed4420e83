//! Reads the browser → VNC server half of an RFB (VNC) connection, message by message,
//! so that the proxy knows when the user is active (idle timeout) and can enforce
//! view-only sessions on the server side: keyboard, mouse, clipboard, resize and power
//! messages are dropped and the client cannot ask for exclusive access.

/// Largest client cut text (clipboard paste) accepted.
pub const MAX_CUT_TEXT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    Security,
    VncAuth,
    ClientInit,
    Messages,
    /// A security type or message this reader does not know: bytes pass unread
    /// (never in view-only sessions).
    Passthrough,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RfbError {
    /// The client sent something a view-only session cannot let through unread.
    #[error("view-only console: the viewer sent {0}, which cannot be checked; closing")]
    ViewOnlyUnsupported(String),
    /// The client broke the protocol.
    #[error("the VNC client sent an invalid message: {0}")]
    Invalid(String),
}

/// What to forward, and whether the user did something.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    pub forward: Vec<u8>,
    /// Keyboard, mouse or clipboard input was seen (forwarded or, view-only, dropped).
    pub input: bool,
}

pub struct ClientReader {
    view_only: bool,
    state: State,
    buf: Vec<u8>,
}

impl ClientReader {
    pub fn new(view_only: bool) -> Self {
        ClientReader {
            view_only,
            state: State::Version,
            buf: Vec::new(),
        }
    }

    fn unsupported(&mut self, what: String) -> Result<(), RfbError> {
        if self.view_only {
            Err(RfbError::ViewOnlyUnsupported(what))
        } else {
            self.state = State::Passthrough;
            Ok(())
        }
    }

    /// Stops reading (or refuses, view-only); the whole buffer is the next unit.
    fn switch(&mut self, what: String) -> Result<Option<usize>, RfbError> {
        self.unsupported(what)?;
        Ok(Some(self.buf.len()))
    }

    /// The length of the next unit in `buf`, if enough of it is there to tell.
    fn next_len(&mut self) -> Result<Option<usize>, RfbError> {
        let b = &self.buf;
        let at = |i: usize| b.get(i).copied();
        let u16_at = |i: usize| Some(u16::from_be_bytes([at(i)?, at(i + 1)?]) as usize);
        let u32_at = |i: usize| {
            Some(u32::from_be_bytes([
                at(i)?,
                at(i + 1)?,
                at(i + 2)?,
                at(i + 3)?,
            ]))
        };
        Ok(match self.state {
            State::Version => Some(12),
            State::Security | State::ClientInit => Some(1),
            State::VncAuth => Some(16),
            State::Passthrough => Some(b.len()),
            State::Messages => {
                let Some(t) = at(0) else { return Ok(None) };
                match t {
                    0 => Some(20),
                    2 => u16_at(2).map(|n| 4 + 4 * n),
                    3 => Some(10),
                    4 => Some(8),
                    5 => Some(6),
                    6 => match u32_at(4) {
                        None => None,
                        Some(raw) => {
                            // Extended clipboard sends a negative length.
                            let len = if raw & 0x8000_0000 != 0 {
                                (raw as i32).unsigned_abs() as usize
                            } else {
                                raw as usize
                            };
                            if len > MAX_CUT_TEXT_BYTES {
                                return Err(RfbError::Invalid(format!(
                                    "a clipboard text of {len} bytes (the limit is {MAX_CUT_TEXT_BYTES})"
                                )));
                            }
                            Some(8 + len)
                        }
                    },
                    150 => Some(10),
                    248 => at(8).map(|n| 9 + n as usize),
                    250 => Some(4),
                    251 => at(6).map(|n| 8 + 16 * n as usize),
                    255 => match at(1) {
                        None => None,
                        Some(0) => Some(12),
                        Some(1) => match u16_at(2) {
                            None => None,
                            Some(0) | Some(1) => Some(4),
                            Some(2) => Some(10),
                            Some(op) => {
                                return self.switch(format!("QEMU audio operation {op}"));
                            }
                        },
                        Some(sub) => {
                            return self.switch(format!("QEMU message {sub}"));
                        }
                    },
                    other => {
                        return self.switch(format!("message type {other}"));
                    }
                }
            }
        })
    }

    /// Feeds bytes from the browser; returns what may go to the VNC server.
    pub fn feed(&mut self, data: &[u8]) -> Result<Filtered, RfbError> {
        self.buf.extend_from_slice(data);
        let mut out = Filtered::default();
        loop {
            let state = self.state;
            let Some(n) = self.next_len()? else { break };
            if self.state == State::Passthrough && state != State::Passthrough {
                // Switched just now: everything from here on passes.
                out.forward.append(&mut self.buf);
                out.input = true;
                break;
            }
            if n == 0 || self.buf.len() < n {
                break;
            }
            let mut unit: Vec<u8> = self.buf.drain(..n).collect();
            match state {
                State::Version => {
                    if !unit.starts_with(b"RFB 003.") {
                        return Err(RfbError::Invalid("no RFB protocol version".into()));
                    }
                    if &unit[..11] == b"RFB 003.003" {
                        // 3.3: the server picks the security type; nothing to read here.
                        self.unsupported("RFB 3.3".into())?;
                    } else {
                        self.state = State::Security;
                    }
                }
                State::Security => match unit[0] {
                    1 => self.state = State::ClientInit,
                    2 => self.state = State::VncAuth,
                    other => self.unsupported(format!("security type {other}"))?,
                },
                State::VncAuth => self.state = State::ClientInit,
                State::ClientInit => {
                    if self.view_only {
                        // Shared: a viewer never disconnects the others.
                        unit[0] = 1;
                    }
                    self.state = State::Messages;
                }
                State::Messages => {
                    let input = matches!(unit[0], 4 | 5 | 6 | 250 | 251 | 255);
                    out.input |= input;
                    if input && self.view_only {
                        continue;
                    }
                }
                State::Passthrough => out.input = true,
            }
            out.forward.extend_from_slice(&unit);
            if self.state == State::Passthrough {
                out.forward.append(&mut self.buf);
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> Vec<u8> {
        let mut v = b"RFB 003.008\n".to_vec();
        v.push(1); // security: none
        v.push(0); // ClientInit: exclusive
        v
    }

    fn key_event() -> Vec<u8> {
        vec![4, 1, 0, 0, 0, 0, 0xff, 0x0d]
    }

    fn update_request() -> Vec<u8> {
        vec![3, 1, 0, 0, 0, 0, 0, 80, 0, 25]
    }

    #[test]
    fn full_access_passes_everything_and_notices_input() {
        let mut r = ClientReader::new(false);
        let f = r.feed(&handshake()).unwrap();
        assert_eq!(f.forward, handshake());
        assert!(!f.input);
        let mut msgs = update_request();
        msgs.extend(key_event());
        // Split across websocket frames at an awkward place.
        let a = r.feed(&msgs[..5]).unwrap();
        let b = r.feed(&msgs[5..]).unwrap();
        assert_eq!([a.forward, b.forward].concat(), msgs);
        assert!(b.input);
    }

    #[test]
    fn view_only_drops_input_and_forces_shared() {
        let mut r = ClientReader::new(true);
        let f = r.feed(&handshake()).unwrap();
        assert_eq!(*f.forward.last().unwrap(), 1, "shared flag forced");
        let mut msgs = key_event();
        msgs.extend(update_request());
        msgs.extend([6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']); // clipboard
        msgs.extend([5, 1, 0, 10, 0, 10]); // pointer
        let f = r.feed(&msgs).unwrap();
        assert_eq!(f.forward, update_request());
        assert!(f.input);
        assert!(matches!(
            r.feed(&[99, 0, 0]),
            Err(RfbError::ViewOnlyUnsupported(_))
        ));
    }

    #[test]
    fn unknown_messages_pass_through_with_full_access() {
        let mut r = ClientReader::new(false);
        r.feed(&handshake()).unwrap();
        let f = r.feed(&[99, 1, 2, 3]).unwrap();
        assert_eq!(f.forward, vec![99, 1, 2, 3]);
        assert_eq!(r.feed(&[7]).unwrap().forward, vec![7]);
    }

    #[test]
    fn oversized_clipboard_is_refused() {
        let mut r = ClientReader::new(false);
        r.feed(&handshake()).unwrap();
        assert!(matches!(
            r.feed(&[6, 0, 0, 0, 0x7f, 0, 0, 0]),
            Err(RfbError::Invalid(_))
        ));
    }
}
