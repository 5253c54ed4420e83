//! The least memory a program that uses libvirt takes: it opens a connection to the URI
//! given, lists the VMs once, prints `ready N` and waits until its stdin closes.
//! `make bench` measures its VmRSS next to virtdeck's, on the same host, as the floor
//! that any libvirt client pays (the library and its dependencies; with the test driver,
//! the simulated host too).

use std::io::Read;

fn main() {
    let Some(uri) = std::env::args().nth(1) else {
        eprintln!("usage: libvirt_floor URI");
        std::process::exit(2);
    };
    let conn = match virt::connect::Connect::open(Some(&uri)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot open {uri}: {e}");
            std::process::exit(1);
        }
    };
    let vms = conn.list_all_domains(0).map(|d| d.len()).unwrap_or(0);
    println!("ready {vms}");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}
