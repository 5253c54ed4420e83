//! A tiny static HTTP server for install trees, on a loopback port, in a thread.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct TreeServer {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    /// Paths requested so far.
    pub hits: Arc<Mutex<Vec<String>>>,
}

/// Serves files below `root`. When `stall` names a path, that file's headers and first
/// bytes are sent and then nothing more, forever (a download that hangs mid-way).
pub fn serve_dir(root: &Path, stall: Option<&str>) -> TreeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let (root, stall, seen) = (root.to_path_buf(), stall.map(str::to_string), hits.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (root, stall, seen) = (root.clone(), stall.clone(), seen.clone());
            std::thread::spawn(move || answer(conn, &root, stall.as_deref(), &seen));
        }
    });
    TreeServer { url, hits }
}

fn answer(mut conn: TcpStream, root: &Path, stall: Option<&str>, seen: &Mutex<Vec<String>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(path.clone());
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    let body = match std::fs::read(&file) {
        Ok(b) if !rel.split('/').any(|s| s == "..") && file.is_file() => b,
        _ => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    };
    let headers = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if conn.write_all(headers.as_bytes()).is_err() {
        return;
    }
    if stall == Some(path.as_str()) {
        let _ = conn.write_all(&body[..body.len().min(4096)]);
        let _ = conn.flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let _ = conn.write_all(&body);
}
