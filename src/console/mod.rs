//! Consoles in the browser: single-use tickets, the live-session registry (per-VM limit,
//! take-over), and the websocket proxies (VNC bytes over loopback TCP or a UNIX socket;
//! serial through a libvirt console stream).
//!
//! The HTTP side (minting tickets, checking the upgrade) is in `web::console`.

pub mod proxy;
pub mod rfb;
pub mod sessions;
pub mod thumbs;
pub mod tickets;

use std::fmt;

/// Which console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsoleKind {
    /// The graphical console (VNC, shown with noVNC).
    Vnc,
    /// The serial console (ttyS0 through libvirt, shown with xterm.js).
    Serial,
}

impl ConsoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Serial => "serial",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ConsoleKind::Vnc => "graphical console",
            ConsoleKind::Serial => "serial console",
        }
    }
}

impl fmt::Display for ConsoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ConsoleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vnc" => Ok(ConsoleKind::Vnc),
            "serial" => Ok(ConsoleKind::Serial),
            other => Err(format!(
                "the console kind must be vnc or serial, not {other:?}"
            )),
        }
    }
}

/// Everything console-related that lives in the application state.
#[derive(Default)]
pub struct Consoles {
    pub tickets: tickets::Tickets,
    pub sessions: sessions::Registry,
    pub stats: std::sync::Arc<sessions::Stats>,
    pub thumbs: std::sync::Arc<thumbs::Thumbs>,
}
