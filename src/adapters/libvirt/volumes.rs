//! Volume contents through libvirt streams: upload, download, resize. Blocking; the
//! caller supplies or takes the bytes piece by piece, so nothing is held whole.

use super::{call, quietly};
use crate::hypervisor::{HvResult, HypervisorError};
use std::io::{ErrorKind, Read, Write};
use virt::connect::Connect;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Bytes moved per stream call.
const CHUNK_BYTES: usize = 256 * 1024;

fn lookup_volume(conn: &Connect, path: &str) -> HvResult<StorageVol> {
    conn.lookup_storage_vol_by_path(path).map_err(|e| {
        if e.code().is(virt::error::ErrorNumber::NoStorageVolume) {
            HypervisorError::NotFound {
                what: format!("volume {path}"),
            }
        } else {
            call("look up the volume")(e)
        }
    })
}

/// Aborts a stream, ignoring what libvirt says about it (the transfer already failed).
fn abort(stream: Stream) {
    quietly(move || {
        let _ = stream.abort();
    });
}

fn failed(operation: &'static str, message: String) -> HypervisorError {
    HypervisorError::Call { operation, message }
}

pub(super) fn resize(
    conn: &Connect,
    path: &str,
    capacity_bytes: u64,
    shrink: bool,
) -> HvResult<()> {
    let flags = if shrink {
        virt::sys::VIR_STORAGE_VOL_RESIZE_SHRINK
    } else {
        0
    };
    lookup_volume(conn, path)?
        .resize(capacity_bytes, flags)
        .map_err(call("resize the volume"))
}

pub(super) fn download_bytes(conn: &Connect, path: &str) -> HvResult<u64> {
    let info = lookup_volume(conn, path)?
        .info_flags(virt::sys::VIR_STORAGE_VOL_GET_PHYSICAL)
        .map_err(call("read the volume's size"))?;
    Ok(info.allocation)
}

pub(super) fn download(
    conn: &Connect,
    path: &str,
    length: u64,
    to: &mut dyn Write,
) -> HvResult<u64> {
    const OP: &str = "download the volume";
    let vol = lookup_volume(conn, path)?;
    let stream = Stream::new(conn, 0).map_err(call(OP))?;
    if let Err(e) = vol.download(&stream, 0, length, 0) {
        abort(stream);
        return Err(call(OP)(e));
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut sent = 0u64;
    loop {
        let n = match stream.recv(&mut buf) {
            Ok(n) if n > 0 => n as usize,
            Ok(_) => break,
            Err(e) => {
                abort(stream);
                return Err(call(OP)(e));
            }
        };
        if let Err(e) = to.write_all(&buf[..n]) {
            abort(stream);
            return Err(failed(
                OP,
                format!("the receiver stopped taking bytes ({e})"),
            ));
        }
        sent += n as u64;
    }
    stream.finish().map_err(call(OP))?;
    Ok(sent)
}

pub(super) fn upload(conn: &Connect, path: &str, length: u64, from: &mut dyn Read) -> HvResult<()> {
    const OP: &str = "upload into the volume";
    let vol = lookup_volume(conn, path)?;
    let stream = Stream::new(conn, 0).map_err(call(OP))?;
    if let Err(e) = vol.upload(&stream, 0, length, 0) {
        abort(stream);
        return Err(call(OP)(e));
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut received = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                abort(stream);
                return Err(failed(OP, e.to_string()));
            }
        };
        received += n as u64;
        if received > length {
            abort(stream);
            return Err(failed(
                OP,
                format!("more than the declared {length} bytes arrived"),
            ));
        }
        let mut off = 0;
        while off < n {
            match stream.send(&buf[off..n]) {
                Ok(k) if k > 0 => off += k as usize,
                Ok(_) => {
                    abort(stream);
                    return Err(failed(OP, "libvirt stopped taking bytes".into()));
                }
                Err(e) => {
                    abort(stream);
                    return Err(call(OP)(e));
                }
            }
        }
    }
    if received != length {
        abort(stream);
        return Err(failed(
            OP,
            format!("the data ended after {received} of {length} bytes"),
        ));
    }
    stream.finish().map_err(call(OP))
}

/// The volume's XML as libvirt describes it (format, backing store).
pub(super) fn xml(conn: &Connect, path: &str) -> HvResult<String> {
    lookup_volume(conn, path)?
        .xml_desc(0)
        .map_err(call("read the volume's description"))
}
