//! Property tests for every parser that reads user or guest bytes: the domain XML reader,
//! the RFB client filter, kickstart and cloud-init rules and renderers, install tree and
//! storage XML readers, the sign-in `next=` check and the host network form.
//!
//! Only the library's public API is used. 256 cases per property keeps the file well
//! under a minute in a debug build.

use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use serde_norway::Value;
use virtdeck::console::rfb::{ClientReader, RfbError, MAX_CUT_TEXT_BYTES};
use virtdeck::domain::cloudinit::{
    check_hostname, check_seed, check_ssh_key, check_user_data, check_user_name, meta_data,
    user_data, yaml_quote, Seed, SeedInput,
};
use virtdeck::domain::host::VirtType;
use virtdeck::domain::hostnet::form::NetForm;
use virtdeck::domain::install_tree::treeinfo_images;
use virtdeck::domain::kickstart::{
    check_base_url, check_content, check_name, install_boot_token, kickstart_url, running_cmdline,
    with_kickstart_arg, KsArgument,
};
use virtdeck::domain::storage::{
    check_absolute_path, normalize_path, parse_pool_xml, parse_volume_format,
};
use virtdeck::domain::vmspec::{
    BootSpec, Clock, CpuSpec, DiskFormat, DiskSpec, Firmware, Mac, NicModel, NicSource, NicSpec,
    VmName, VmSpec,
};
use virtdeck::domain::xml::{domain_xml, install_domain_xml, macs_in, parse_domain};
use virtdeck::web::pages::safe_next;

// ---------------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------------

/// Pieces of real domain, pool and volume XML, plus the awkward bits of XML syntax.
const XML_FRAGMENTS: &[&str] = &[
    "<domain type='kvm'>",
    "<domain type=\"qemu\" id=\"3\">",
    "<domain type='test' id='-1'>",
    "</domain>",
    "<name>",
    "</name>",
    "vm1",
    " web01 ",
    "<uuid>6f1c2a4e-9b1d-4c3e-8f2a-0123456789ab</uuid>",
    "<description>",
    "</description>",
    "<memory unit='KiB'>",
    "<memory unit='EB'>",
    "<memory unit='bytes'>",
    "<memory unit='zz'>",
    "<memory>",
    "</memory>",
    "2097152",
    "18446744073709551615",
    "340282366920938463463374607431768211455",
    "-1",
    "<vcpu placement='static'>",
    "<vcpu>",
    "</vcpu>",
    "4294967296",
    "<os>",
    "</os>",
    "<type arch='x86_64' machine='pc'>hvm</type>",
    "<kernel>",
    "</kernel>",
    "<cmdline>",
    "</cmdline>",
    "console=ttyS0 inst.ks=http://h/ks/tok",
    "<boot dev='hd'/>",
    "<boot dev='cdrom'/>",
    "<devices>",
    "</devices>",
    "<disk type='file' device='disk'>",
    "<disk type='block' device='cdrom'>",
    "</disk>",
    "<driver name='qemu' type='qcow2'/>",
    "<source file='/var/lib/libvirt/images/a.qcow2'/>",
    "<source pool='default' volume='v'/>",
    "<target dev='vda' bus='virtio'/>",
    "<boot order='1'/>",
    "<boot order='4294967295'/>",
    "<boot order='x'/>",
    "<interface type='network'>",
    "<interface type='bridge'>",
    "</interface>",
    "<mac address='52:54:00:AA:bb:cc'/>",
    "<source network='default' bridge='virbr0'/>",
    "<model type='virtio'/>",
    "<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>",
    "<graphics type='vnc' port='99999999999'/>",
    "<graphics type='vnc' port=''/>",
    "<listen type='address' address='0.0.0.0'/>",
    "<listen type='socket' socket='/run/x.sock'/>",
    "</graphics>",
    "<serial type='pty'>",
    "<log file='/var/log/x.log' append='on'/>",
    "</serial>",
    "<pool type='netfs'>",
    "</pool>",
    "<source>",
    "</source>",
    "<host name='nfs.example'/>",
    "<dir path='/export'/>",
    "<device path='/dev/sdb'/>",
    "<format type='nfs'/>",
    "<target>",
    "</target>",
    "<path>",
    "</path>",
    "<volume type='file'>",
    "</volume>",
    "<format type='qcow2'/>",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x41;",
    "&#x110000;",
    "&#xD800;",
    "&#;",
    "&unknown;",
    "&",
    "<![CDATA[x]]>",
    "<![CDATA[",
    "]]>",
    "<!-- c -->",
    "<!--",
    "<?xml version='1.0'?>",
    "<?pi x?>",
    "<!DOCTYPE domain>",
    "<!DOCTYPE d [<!ENTITY e 'x'>]>",
    "<a:b xmlns:a='u'>",
    "</a:b>",
    "<x y='1' y='2'/>",
    "<x y=1/>",
    "<x y='<'/>",
    "<",
    ">",
    "</",
    "/>",
    "'",
    "\"",
    "=",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{feff}",
    "é",
];

/// XML-ish text: fragments of real XML glued together, with arbitrary text between.
fn xmlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => select(XML_FRAGMENTS).prop_map(str::to_string),
            1 => any::<String>(),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

/// Text for names and paths: the characters XML escapes, non-ASCII, no tab/CR/LF (which
/// attribute value normalization turns into spaces).
const TEXT_CHARS: &str = r#"[A-Za-z0-9 ._/:=,&<>"'\-é€😀]"#;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{TEXT_CHARS}{{0,{max}}}")).unwrap()
}

fn vm_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>()
        .prop_filter("unicast, non-zero", |b| b[0] & 1 == 0 && *b != [0; 6])
        .prop_map(|b| {
            let s = b
                .iter()
                .map(|x| format!("{x:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            Mac::parse(&s).expect("a unicast non-zero MAC parses")
        })
}

fn disk() -> impl Strategy<Value = DiskSpec> {
    (
        text(40).prop_map(|p| format!("/{p}")),
        any::<bool>(),
        prop_oneof![Just(DiskFormat::Qcow2), Just(DiskFormat::Raw)],
        any::<bool>(),
    )
        .prop_map(|(path, block, format, cdrom)| DiskSpec {
            path,
            block,
            format,
            cdrom,
        })
}

fn boot() -> impl Strategy<Value = BootSpec> {
    prop_oneof![
        Just(BootSpec::Disk),
        Just(BootSpec::Cdrom),
        Just(BootSpec::Network),
        (
            "/[a-z0-9/._-]{1,30}",
            proptest::option::of("/[a-z0-9/._-]{1,30}"),
            text(60)
        )
            .prop_map(|(kernel, initrd, cmdline)| BootSpec::Kernel {
                kernel,
                initrd,
                cmdline
            }),
    ]
}

fn nic() -> impl Strategy<Value = NicSpec> {
    (
        any::<bool>(),
        text(15),
        prop_oneof![Just(NicModel::Virtio), Just(NicModel::E1000)],
        mac(),
    )
        .prop_map(|(bridge, name, model, mac)| NicSpec {
            source: if bridge {
                NicSource::Bridge(name)
            } else {
                NicSource::Network(name)
            },
            model,
            mac,
        })
}

fn spec() -> impl Strategy<Value = VmSpec> {
    (
        vm_name(),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        prop_oneof![
            Just(VirtType::Kvm),
            Just(VirtType::Qemu),
            Just(VirtType::Test)
        ],
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(disk(), 0..6),
        boot(),
        proptest::option::of(nic()),
        prop_oneof![Just(Clock::Utc), Just(Clock::Localtime)],
        (
            text(80),
            prop_oneof![
                Just(Firmware::Bios),
                Just(Firmware::Uefi),
                Just(Firmware::UefiSecureBoot)
            ],
            any::<bool>(),
            prop_oneof![
                Just(CpuSpec::Default),
                Just(CpuSpec::HostPassthrough),
                Just(CpuSpec::HostModel),
                "[A-Za-z][A-Za-z0-9_-]{0,20}".prop_map(CpuSpec::Custom)
            ],
        ),
        proptest::option::of(text(30).prop_map(|p| format!("/{p}"))),
    )
        .prop_map(
            |(
                name,
                uuid,
                virt_type,
                vcpus,
                memory_mib,
                disks,
                boot,
                nic,
                clock,
                (d, firmware, tpm, cpu),
                log,
            )| VmSpec {
                name: VmName::parse(&name).expect("a name from the allowed alphabet"),
                uuid,
                virt_type,
                vcpus,
                memory_mib,
                disks,
                boot,
                nic,
                clock,
                description: d,
                serial_log: log,
                firmware,
                tpm,
                cpu,
            },
        )
}

/// Split points for feeding a byte string in pieces.
fn cut(data: &[u8], cuts: &[Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
}

// ---------------------------------------------------------------------------------------
// Domain XML
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_domain_never_panics_on_any_string(s in any::<String>()) {
        let _ = parse_domain(&s);
        prop_assert!(macs_in(&s).is_empty() || parse_domain(&s).is_ok());
    }

    #[test]
    fn parse_domain_never_panics_on_xmlish_text(s in xmlish()) {
        let parsed = parse_domain(&s);
        let macs = macs_in(&s);
        match parsed {
            Ok(d) => {
                prop_assert!(!d.name.is_empty());
                let want: Vec<String> = d
                    .nics
                    .iter()
                    .filter_map(|n| n.mac.as_ref())
                    .map(|m| m.to_ascii_lowercase())
                    .collect();
                prop_assert_eq!(macs, want);
            }
            Err(_) => prop_assert!(macs.is_empty()),
        }
    }

    #[test]
    fn rendered_domain_xml_mangled_never_panics(
        spec in spec(),
        at in any::<Index>(),
        insert in select(XML_FRAGMENTS),
        truncate in any::<bool>(),
    ) {
        let xml = domain_xml(&spec);
        let mut i = at.index(xml.len() + 1);
        while !xml.is_char_boundary(i) {
            i -= 1;
        }
        let mangled = if truncate {
            xml[..i].to_string()
        } else {
            format!("{}{insert}{}", &xml[..i], &xml[i..])
        };
        let _ = parse_domain(&mangled);
        let _ = macs_in(&mangled);
    }

    #[test]
    fn rendered_domain_xml_parses_back(spec in spec()) {
        let xml = domain_xml(&spec);
        let d = parse_domain(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(&d.name, spec.name.as_str());
        prop_assert_eq!(&d.uuid, &spec.uuid);
        prop_assert_eq!(d.domain_type.as_str(), spec.virt_type.as_str());
        prop_assert_eq!(d.vcpus, spec.vcpus);
        prop_assert_eq!(d.memory_mib, spec.memory_mib);
        prop_assert_eq!(&d.description, &spec.description);
        prop_assert_eq!(d.disks.len(), spec.disks.len());
        prop_assert_eq!(d.firmware.as_str(), if spec.firmware.is_uefi() { "uefi" } else { "bios" });
        prop_assert_eq!(d.secure_boot, spec.firmware == Firmware::UefiSecureBoot);
        prop_assert_eq!(d.tpm.is_some(), spec.tpm);
        let cpu = match (&spec.cpu, spec.virt_type) {
            (CpuSpec::Default, VirtType::Kvm) => Some("host-passthrough"),
            (CpuSpec::Default, _) => None,
            (c, _) => Some(c.as_value()),
        };
        prop_assert_eq!(d.cpu.as_deref(), cpu);
        let mut targets = std::collections::HashSet::new();
        for (got, want) in d.disks.iter().zip(&spec.disks) {
            prop_assert_eq!(got.source.as_deref(), Some(want.path.as_str()));
            prop_assert_eq!(got.format.as_deref(), Some(want.format.as_str()));
            prop_assert_eq!(got.device.as_str(), if want.cdrom { "cdrom" } else { "disk" });
            let q35 = spec.firmware.is_uefi();
            let cdrom_bus = if q35 { "scsi" } else { "ide" };
            prop_assert_eq!(got.bus.as_str(), if want.cdrom { cdrom_bus } else { "virtio" });
            let prefix = match (want.cdrom, q35) {
                (false, _) => "vd",
                (true, true) => "sd",
                (true, false) => "hd",
            };
            prop_assert!(got.target.starts_with(prefix), "target {}", got.target);
            prop_assert!(targets.insert(got.target.clone()), "target {} twice", got.target);
        }
        match &spec.nic {
            None => prop_assert!(d.nics.is_empty()),
            Some(n) => {
                prop_assert_eq!(d.nics.len(), 1);
                let (kind, source) = match &n.source {
                    NicSource::Bridge(b) => ("bridge", b),
                    NicSource::Network(b) => ("network", b),
                };
                prop_assert_eq!(d.nics[0].kind.as_str(), kind);
                prop_assert_eq!(d.nics[0].source.as_ref(), Some(source));
                prop_assert_eq!(d.nics[0].model.as_deref(), Some(n.model.as_str()));
                prop_assert_eq!(d.nics[0].mac.clone(), Some(n.mac.to_string()));
                prop_assert_eq!(macs_in(&xml), vec![n.mac.to_string()]);
            }
        }
        prop_assert_eq!(&d.serial_log, &spec.serial_log);
        prop_assert!(d.has_serial);
        match &spec.boot {
            BootSpec::Kernel { kernel, .. } => prop_assert_eq!(d.kernel.as_ref(), Some(kernel)),
            _ => prop_assert_eq!(d.kernel, None),
        }
    }

    #[test]
    fn vm_names_are_checked_without_panicking(s in any::<String>()) {
        if let Ok(name) = VmName::parse(&s) {
            let n = name.as_str();
            prop_assert_eq!(n, s.trim());
            prop_assert!(!n.is_empty() && n.len() <= 64);
            prop_assert!(n.starts_with(|c: char| c.is_ascii_alphanumeric()));
            prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        }
    }

    #[test]
    fn names_from_the_alphabet_are_accepted(s in vm_name(), pad in "[ ]{0,3}") {
        let name = VmName::parse(&format!("{pad}{s}{pad}")).unwrap();
        prop_assert_eq!(name.as_str(), s.as_str());
    }

    #[test]
    fn names_outside_the_alphabet_are_refused(
        a in vm_name(),
        bad in r#"[/\\<>&"' :;@#%\t\u{0}\u{7f}é😀]"#,
        at in any::<Index>(),
    ) {
        let mut s = a.clone();
        let i = at.index(s.len() + 1);
        s.insert_str(i, &bad);
        let trimmed = s.trim();
        if trimmed != a.as_str() {
            prop_assert!(VmName::parse(&s).is_err(), "{:?} accepted", s);
        }
    }

    #[test]
    fn macs_are_checked_without_panicking(s in any::<String>(), hexish in "[0-9a-fA-F:]{0,20}") {
        for input in [&s, &hexish] {
            if let Ok(m) = Mac::parse(input) {
                let shown = m.to_string();
                prop_assert_eq!(Mac::parse(&shown), Ok(m));
                prop_assert_eq!(shown.to_ascii_lowercase(), input.trim().to_ascii_lowercase());
                let first = u8::from_str_radix(&shown[..2], 16).unwrap();
                prop_assert_eq!(first & 1, 0);
                prop_assert_ne!(shown.as_str(), "00:00:00:00:00:00");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// RFB client → VNC server filter
// ---------------------------------------------------------------------------------------

/// A well-formed client message and whether it is user input (key, pointer, clipboard,
/// QEMU key/audio, resize, …).
fn rfb_message() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let fixed = |t: u8, len: usize, input: bool| {
        prop::collection::vec(any::<u8>(), len - 1).prop_map(move |rest| {
            let mut m = vec![t];
            m.extend(rest);
            (m, input)
        })
    };
    prop_oneof![
        fixed(0, 20, false),
        (any::<u8>(), prop::collection::vec(any::<[u8; 4]>(), 0..8)).prop_map(|(pad, encs)| {
            let mut m = vec![2, pad];
            m.extend((encs.len() as u16).to_be_bytes());
            m.extend(encs.concat());
            (m, false)
        }),
        fixed(3, 10, false),
        fixed(4, 8, true),
        fixed(5, 6, true),
        (prop::collection::vec(any::<u8>(), 0..64), any::<bool>()).prop_map(|(text, ext)| {
            let raw: u32 = if ext && !text.is_empty() {
                (-(text.len() as i32)) as u32
            } else {
                text.len() as u32
            };
            let mut m = vec![6, 0, 0, 0];
            m.extend(raw.to_be_bytes());
            m.extend(text);
            (m, true)
        }),
        fixed(150, 10, false),
        (
            prop::collection::vec(any::<u8>(), 8),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(head, tail)| {
                let mut m = vec![248];
                m.extend(&head[..7]);
                m.push(tail.len() as u8);
                m.extend(tail);
                (m, false)
            }),
        fixed(250, 4, true),
        (prop::collection::vec(any::<u8>(), 5), 0u8..4).prop_flat_map(|(head, n)| {
            prop::collection::vec(any::<u8>(), 1 + 16 * n as usize).prop_map(move |rest| {
                let mut m = vec![251];
                m.extend(&head);
                m.push(n);
                m.extend(&rest);
                (m, true)
            })
        }),
        prop::collection::vec(any::<u8>(), 10).prop_map(|rest| {
            let mut m = vec![255, 0];
            m.extend(rest);
            (m, true)
        }),
        (0u16..3, prop::collection::vec(any::<u8>(), 6)).prop_map(|(op, rest)| {
            let mut m = vec![255, 1];
            m.extend(op.to_be_bytes());
            if op == 2 {
                m.extend(rest);
            }
            (m, true)
        }),
    ]
}

/// A client handshake the filter reads to its end (version, security none or VNC auth,
/// ClientInit), and the ClientInit byte as the viewer sent it.
fn rfb_handshake() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        select(&["RFB 003.008\n", "RFB 003.007\n", "RFB 003.889\n"][..]),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u8>(),
    )
        .prop_map(|(version, auth, response, shared)| {
            let mut v = version.as_bytes().to_vec();
            if auth {
                v.push(2);
                v.extend(response);
            } else {
                v.push(1);
            }
            v.push(shared);
            let at = v.len() - 1;
            (v, at)
        })
}

/// Client bytes: mostly a handshake and real messages, sometimes garbage in between.
fn rfb_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            4 => rfb_handshake().prop_map(|(h, _)| h),
            1 => prop::collection::vec(any::<u8>(), 0..20),
        ],
        prop::collection::vec(
            prop_oneof![
                6 => rfb_message().prop_map(|(m, _)| m),
                1 => prop::collection::vec(any::<u8>(), 1..12),
            ],
            0..24,
        ),
    )
        .prop_map(|(h, msgs)| [h, msgs.concat()].concat())
}

/// Feeds the pieces until one is refused: what was forwarded, whether input was seen,
/// and whether the reader refused.
fn feed_all(view_only: bool, pieces: &[Vec<u8>]) -> (Vec<u8>, bool, Option<RfbError>) {
    let mut r = ClientReader::new(view_only);
    let (mut fwd, mut input) = (Vec::new(), false);
    for p in pieces {
        match r.feed(p) {
            Ok(f) => {
                fwd.extend(f.forward);
                input |= f.input;
            }
            Err(e) => return (fwd, input, Some(e)),
        }
    }
    (fwd, input, None)
}

/// Reads what a view-only session forwarded: a handshake with the shared flag set, then
/// only whole messages that carry no user input.
fn check_view_only_output(fwd: &[u8]) -> Result<(), String> {
    if fwd.is_empty() {
        return Ok(());
    }
    if fwd.len() < 12 || !fwd.starts_with(b"RFB 003.") || fwd.starts_with(b"RFB 003.003") {
        return Err(format!("bad version {fwd:?}"));
    }
    let mut i = 12;
    let Some(&sec) = fwd.get(i) else {
        return Ok(());
    };
    i += 1;
    match sec {
        1 => {}
        2 => i += 16,
        other => return Err(format!("security type {other} forwarded")),
    }
    if i > fwd.len() {
        // The 16-byte response goes out whole once it is there.
        return if fwd.len() == 13 {
            Ok(())
        } else {
            Err("partial VNC auth response forwarded".into())
        };
    }
    let Some(&shared) = fwd.get(i) else {
        return Ok(());
    };
    if shared != 1 {
        return Err(format!("ClientInit {shared} forwarded, not shared"));
    }
    i += 1;
    while i < fwd.len() {
        let m = &fwd[i..];
        let len = match m[0] {
            0 => 20,
            2 if m.len() >= 4 => 4 + 4 * u16::from_be_bytes([m[2], m[3]]) as usize,
            3 | 150 => 10,
            248 if m.len() >= 9 => 9 + m[8] as usize,
            t @ (2 | 248) => return Err(format!("partial message {t} forwarded")),
            t => return Err(format!("message type {t} forwarded by a view-only session")),
        };
        if m.len() < len {
            return Err(format!("partial message {} forwarded", m[0]));
        }
        i += len;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rfb_arbitrary_bytes_in_arbitrary_pieces_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        view_only in any::<bool>(),
    ) {
        let _ = feed_all(view_only, &cut(&data, &cuts));
    }

    #[test]
    fn rfb_forwarding_does_not_depend_on_how_bytes_are_split(
        data in rfb_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        view_only in any::<bool>(),
    ) {
        let (whole, whole_input, whole_err) = feed_all(view_only, std::slice::from_ref(&data));
        let (pieces, pieces_input, pieces_err) = feed_all(view_only, &cut(&data, &cuts));
        prop_assert_eq!(&whole_err, &pieces_err);
        if whole_err.is_none() {
            prop_assert_eq!(whole, pieces);
            prop_assert_eq!(whole_input, pieces_input);
        }
    }

    #[test]
    fn rfb_full_access_forwards_every_byte_unchanged_and_holds_back_little(
        data in rfb_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut r = ClientReader::new(false);
        let (mut fed, mut fwd) = (Vec::new(), Vec::new());
        for p in cut(&data, &cuts) {
            fed.extend(&p);
            match r.feed(&p) {
                Ok(f) => fwd.extend(f.forward),
                Err(_) => break,
            }
            // Only the start of one unfinished message is ever held back.
            prop_assert!(fed.starts_with(&fwd));
            prop_assert!(fed.len() - fwd.len() < 8 + MAX_CUT_TEXT_BYTES);
        }
    }

    #[test]
    fn rfb_whole_messages_are_never_held_back(
        (handshake, _) in rfb_handshake(),
        msgs in prop::collection::vec(rfb_message(), 0..24),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let data = [handshake, msgs.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>().concat()].concat();
        let (fwd, input, err) = feed_all(false, &cut(&data, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(fwd, data);
        prop_assert_eq!(input, msgs.iter().any(|(_, i)| *i));
    }

    #[test]
    fn rfb_view_only_forwards_no_input_message(
        (handshake, shared_at) in rfb_handshake(),
        msgs in prop::collection::vec(rfb_message(), 0..24),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let data = [handshake.clone(), msgs.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>().concat()].concat();
        let (fwd, input, err) = feed_all(true, &cut(&data, &cuts));
        prop_assert_eq!(err, None);
        let mut want = handshake;
        want[shared_at] = 1;
        for (m, is_input) in &msgs {
            if !is_input {
                want.extend(m);
            }
        }
        prop_assert_eq!(&fwd, &want);
        prop_assert_eq!(input, msgs.iter().any(|(_, i)| *i));
        check_view_only_output(&fwd).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn rfb_view_only_output_never_holds_input_whatever_the_client_sends(
        data in rfb_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (fwd, _, _) = feed_all(true, &cut(&data, &cuts));
        check_view_only_output(&fwd).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------
// Kickstart
// ---------------------------------------------------------------------------------------

fn base_url() -> impl Strategy<Value = String> {
    "https?://[a-z0-9][a-z0-9.-]{0,20}(:[0-9]{1,5})?(/[A-Za-z0-9._~%=-]{0,10}){0,3}/?"
}

fn kernel_args() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => "[a-z._]{1,10}(=[A-Za-z0-9/:.,&<>\"'-]{0,12})?",
            1 => select(&["ks=http://old/ks.cfg", "inst.ks=nfs:x:/ks", "inst.ks.device=eth0",
                "ks", "inst.ks", "rd.ks=1", "quiet", "console=ttyS0,115200n8"][..])
                .prop_map(str::to_string),
            1 => "[^ \t\n]{1,8}",
        ],
        0..8,
    )
    .prop_flat_map(|args| {
        let n = args.len();
        (
            Just(args),
            prop::collection::vec(select(&[" ", "  ", "\t", "\n"][..]), n + 1),
        )
    })
    .prop_map(|(args, seps)| {
        let mut s = seps[0].to_string();
        for (a, sep) in args.iter().zip(&seps[1..]) {
            s.push_str(a);
            s.push_str(sep);
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kickstart_checks_never_panic(s in any::<String>()) {
        if let Ok(n) = check_name(&s) {
            prop_assert_eq!(n, s.trim());
            prop_assert!(!n.starts_with('.') && !n.is_empty() && n.chars().count() <= 64);
            prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        }
        if check_content(&s).is_ok() {
            prop_assert!(!s.trim().is_empty() && !s.contains('\0'));
        }
        let _ = check_base_url(&s);
        let _ = running_cmdline(&s, "vm1");
        let _ = install_boot_token(&s, "vm1");
    }

    #[test]
    fn kickstart_readers_never_panic_on_xmlish_text(s in xmlish(), vm in "vm1|web01") {
        let _ = running_cmdline(&s, &vm);
        let _ = install_boot_token(&s, &vm);
    }

    #[test]
    fn kernel_args_get_exactly_one_ks_argument(
        args in kernel_args(),
        base in base_url(),
        token in "[A-Za-z0-9_-]{1,43}",
        ks in prop_oneof![Just(KsArgument::InstKs), Just(KsArgument::Ks)],
    ) {
        prop_assume!(check_base_url(&base).is_ok());
        let url = kickstart_url(&base, &token);
        let out = with_kickstart_arg(&args, ks, &url);
        let is_ks = |a: &str| a.starts_with("inst.ks=") || a.starts_with("ks=");
        let got: Vec<&str> = out.split_whitespace().collect();
        let ks_args: Vec<&str> = got.iter().copied().filter(|a| is_ks(a)).collect();
        let want_ks = format!("{}={url}", ks.as_str());
        prop_assert_eq!(ks_args, vec![want_ks.as_str()]);
        let others: Vec<&str> = got.iter().copied().filter(|a| !is_ks(a)).collect();
        let kept: Vec<&str> = args.split_whitespace().filter(|a| !is_ks(a)).collect();
        prop_assert_eq!(others, kept);
        prop_assert_eq!(got.last(), Some(&want_ks.as_str()));
    }

    #[test]
    fn install_boot_token_round_trips_through_the_live_xml(
        spec in spec(),
        args in kernel_args(),
        base in base_url(),
        token in "[A-Za-z0-9_-]{1,43}",
        ks in prop_oneof![Just(KsArgument::InstKs), Just(KsArgument::Ks)],
        id in 1u32..100_000,
    ) {
        prop_assume!(check_base_url(&base).is_ok());
        let cmdline = with_kickstart_arg(&args, ks, &kickstart_url(&base, &token));
        let xml = install_domain_xml(&spec, "/k/vmlinuz", "/k/initrd.img", &cmdline);
        let open = format!("<domain type=\"{}\">", spec.virt_type.as_str());
        prop_assert!(xml.starts_with(&open), "{}", xml);
        let live = xml.replacen(&open, &format!("<domain type=\"{}\" id=\"{id}\">", spec.virt_type.as_str()), 1);
        let name = spec.name.as_str();
        prop_assert_eq!(running_cmdline(&live, name), Some(cmdline.clone()));
        prop_assert_eq!(install_boot_token(&live, name), Some(token.clone()));
        // Not running, or another VM: no install boot.
        prop_assert_eq!(install_boot_token(&xml, name), None);
        prop_assert_eq!(install_boot_token(&live, &format!("{name}x")), None);
        let stopped = xml.replacen(&open, &format!("<domain type=\"{}\" id=\"-1\">", spec.virt_type.as_str()), 1);
        prop_assert_eq!(running_cmdline(&stopped, name), None);
    }
}

// ---------------------------------------------------------------------------------------
// Cloud-init
// ---------------------------------------------------------------------------------------

fn yaml_mapping(doc: &str) -> Result<serde_norway::Mapping, TestCaseError> {
    let mut v: Value = serde_norway::from_str(doc)
        .map_err(|e| TestCaseError::fail(format!("not YAML ({e}):\n{doc}")))?;
    // cloud-init's YAML loader applies merge keys (`<<`); so does this check.
    v.apply_merge()
        .map_err(|e| TestCaseError::fail(format!("bad merge ({e}):\n{doc}")))?;
    match v {
        Value::Mapping(m) => Ok(m),
        other => Err(TestCaseError::fail(format!(
            "not a mapping: {other:?}\n{doc}"
        ))),
    }
}

/// Strings with the characters YAML treats specially, line breaks of every kind
/// included.
fn yaml_hostile() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            3 => select(&['"', '\'', '\\', ':', '#', '-', '?', '&', '*', '!', '|', '>', '%',
                '@', '`', '{', '}', '[', ']', ',', ' ', '\t', '\n', '\r', '\u{0}', '\u{7}',
                '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{2029}', '\u{feff}',
                '\u{fffe}', '\u{ffff}', '\u{d7ff}', '\u{e000}', '\u{fffd}', '\u{10ffff}',
                'é', '😀'][..]),
        ],
        0..40,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..4)
        .prop_map(|labels| labels.join("."))
}

fn ssh_key() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(any::<u8>(), 16..48),
        proptest::option::of(yaml_hostile()),
    )
        .prop_map(|(key, comment)| {
            use base64::Engine;
            let mut blob = Vec::new();
            blob.extend_from_slice(&11u32.to_be_bytes());
            blob.extend_from_slice(b"ssh-ed25519");
            blob.extend_from_slice(&(key.len() as u32).to_be_bytes());
            blob.extend(key);
            let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
            // check_ssh_key refuses control characters other than tab in a key line.
            let comment = comment.map(|c| c.replace(|c: char| c.is_control() && c != '\t', "?"));
            match comment {
                Some(c) => format!("ssh-ed25519 {b64} {c}"),
                None => format!("ssh-ed25519 {b64}"),
            }
        })
}

/// Top-level entries of extra user-data: ordinary cloud-config and every way YAML has of
/// naming a key that is not `key:` at the start of a line.
const EXTRA_ENTRIES: &[&str] = &[
    "packages:\n  - htop\n  - \"users: x\"",
    "package_update: true",
    "runcmd:\n  - [sh, -c, 'echo hostname: x']",
    "write_files:\n  - path: /etc/motd\n    content: |\n      users: evil\n      hostname: evil",
    "bootcmd:\n- echo hi",
    "timezone: UTC # users: x",
    "ca_certs: {}",
    "? users\n: []",
    "&a users: []",
    "!!str users: []",
    "\"u\\x73ers\": []",
    "\"chpass\\u0077d\": {expire: false}",
    "<<: {chpasswd: {expire: false}, password: pw}",
    "ntp: {}\u{2028}users: []",
    "mounts: []\u{2029}fqdn: evil.example",
    "locale: C\u{85}password: pw",
];

fn extra_user_data() -> impl Strategy<Value = String> {
    (
        subsequence(EXTRA_ENTRIES, 0..=4),
        proptest::option::of("zz_[a-z]{1,6}: [a-z]{0,6}"),
        any::<bool>(),
    )
        .prop_map(|(entries, extra, crlf)| {
            let mut lines: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
            lines.extend(extra);
            let body = lines.join("\n");
            let text = format!("#cloud-config\n{body}");
            if crlf {
                text.replace('\n', "\r\n")
            } else {
                text
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn yaml_quote_reads_back_as_the_same_string(s in prop_oneof![any::<String>(), yaml_hostile()]) {
        let q = yaml_quote(&s);
        prop_assert!(!q.contains('\n'), "one line: {:?}", q);
        let back: String = serde_norway::from_str(&q)
            .map_err(|e| TestCaseError::fail(format!("{q:?} is not a YAML scalar: {e}")))?;
        prop_assert_eq!(&back, &s);
        // As a mapping value it adds no key.
        let m = yaml_mapping(&format!("k: {q}\n"))?;
        prop_assert_eq!(m.len(), 1);
        prop_assert_eq!(m.get("k"), Some(&Value::String(s.clone())));
    }

    #[test]
    fn cloud_init_checks_never_panic(s in prop_oneof![any::<String>(), yaml_hostile()]) {
        if check_hostname(&s).is_ok() {
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        }
        if check_user_name(&s).is_ok() {
            prop_assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'));
        }
        let _ = check_ssh_key(&s);
        let _ = check_ssh_key(&format!("ssh-ed25519 {s}"));
        let _ = check_user_data(&s);
        let _ = check_user_data(&format!("#cloud-config\n{s}"));
    }

    #[test]
    fn seed_errors_are_at_seed_fields(
        vm in any::<String>(),
        host in prop_oneof![any::<String>(), hostname()],
        user in prop_oneof![any::<String>(), "[a-z_][a-z0-9_-]{0,31}"],
        has_password in any::<bool>(),
        keys in prop_oneof![any::<String>(), prop::collection::vec(ssh_key(), 0..3).prop_map(|k| k.join("\n"))],
        extra in prop_oneof![any::<String>(), extra_user_data()],
    ) {
        let input = SeedInput {
            vm_name: &vm,
            hostname: &host,
            user: &user,
            has_password,
            ssh_keys: &keys,
            user_data: &extra,
        };
        match check_seed(&input) {
            Ok(c) => {
                prop_assert!(check_hostname(&c.hostname).is_ok());
                prop_assert!(check_user_name(&c.user).is_ok());
                for k in &c.ssh_keys {
                    prop_assert!(check_ssh_key(k).is_ok());
                }
            }
            Err(errs) => {
                prop_assert!(!errs.is_empty());
                for e in errs {
                    prop_assert!(
                        ["ci_hostname", "ci_user", "ci_ssh_keys", "ci_user_data"].contains(&e.field),
                        "{:?}", e
                    );
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn user_data_reads_back_as_given_with_no_added_keys(
        instance_id in prop_oneof![any::<String>(), yaml_hostile()],
        host in hostname(),
        user in "[a-z_][a-z0-9_-]{0,31}",
        password_hash in proptest::option::of(prop_oneof![
            "\\$6\\$[a-zA-Z0-9./]{1,16}\\$[a-zA-Z0-9./]{86}",
            yaml_hostile(),
        ]),
        ssh_keys in prop::collection::vec(ssh_key(), 0..4),
        extra in proptest::option::of(extra_user_data()),
    ) {
        prop_assume!(check_hostname(&host).is_ok() && check_user_name(&user).is_ok());
        prop_assume!(ssh_keys.iter().all(|k| check_ssh_key(k).is_ok()));
        let extra_user_data = match &extra {
            Some(text) => match check_user_data(text) {
                Ok(body) => body,
                Err(_) => return Ok(()),
            },
            None => String::new(),
        };
        let seed = Seed {
            instance_id,
            hostname: host,
            user,
            password_hash,
            ssh_keys,
            extra_user_data,
        };

        let meta = yaml_mapping(&meta_data(&seed))?;
        prop_assert_eq!(meta.len(), 2);
        prop_assert_eq!(meta.get("instance-id"), Some(&Value::String(seed.instance_id.clone())));
        prop_assert_eq!(meta.get("local-hostname"), Some(&Value::String(seed.hostname.clone())));

        let doc = user_data(&seed);
        prop_assert!(doc.starts_with("#cloud-config\n"));
        let m = yaml_mapping(&doc)?;
        let s = |v: &str| Value::String(v.to_string());
        prop_assert_eq!(m.get("hostname"), Some(&s(&seed.hostname)), "{}", doc);
        prop_assert_eq!(m.get("preserve_hostname"), Some(&Value::Bool(false)), "{}", doc);
        prop_assert_eq!(m.get("ssh_pwauth"), Some(&Value::Bool(seed.password_hash.is_some())), "{}", doc);
        for reserved in ["fqdn", "chpasswd", "password"] {
            prop_assert!(m.get(reserved).is_none(), "extra user-data set {}:\n{}", reserved, doc);
        }
        let users = m.get("users").and_then(Value::as_sequence);
        prop_assert!(users.is_some_and(|u| u.len() == 1), "users: {:?}\n{}", users, doc);
        let u = users.unwrap()[0].as_mapping();
        prop_assert!(u.is_some(), "{}", doc);
        let u = u.unwrap();
        prop_assert_eq!(u.get("name"), Some(&s(&seed.user)));
        prop_assert_eq!(u.get("shell"), Some(&s("/bin/bash")));
        match &seed.password_hash {
            Some(h) => {
                prop_assert_eq!(u.get("hashed_passwd"), Some(&s(h)));
                prop_assert_eq!(u.get("lock_passwd"), Some(&Value::Bool(false)));
                prop_assert_eq!(u.get("sudo"), Some(&s("ALL=(ALL) ALL")));
            }
            None => {
                prop_assert!(u.get("hashed_passwd").is_none());
                prop_assert_eq!(u.get("lock_passwd"), Some(&Value::Bool(true)));
                prop_assert_eq!(u.get("sudo"), Some(&s("ALL=(ALL) NOPASSWD:ALL")));
            }
        }
        let keys: Vec<Value> = seed.ssh_keys.iter().map(|k| s(k)).collect();
        if keys.is_empty() {
            prop_assert!(u.get("ssh_authorized_keys").is_none());
            prop_assert_eq!(u.len(), if seed.password_hash.is_some() { 5 } else { 4 });
        } else {
            prop_assert_eq!(u.get("ssh_authorized_keys"), Some(&Value::Sequence(keys)));
            prop_assert_eq!(u.len(), if seed.password_hash.is_some() { 6 } else { 5 });
        }
    }
}

/// The cases the properties above found, kept as plain examples.
#[test]
fn found_cloud_init_cases() {
    for c in ['\u{fffe}', '\u{ffff}', '\u{2028}', '\u{feff}'] {
        let q = yaml_quote(&c.to_string());
        assert_eq!(q, format!("\"\\u{:04x}\"", c as u32));
        assert_eq!(serde_norway::from_str::<String>(&q).unwrap(), c.to_string());
    }
    for sneaky in [
        "? users\n: []",
        "&a users: []",
        "!!str users: []",
        "\"u\\x73ers\": []",
        "<<: {chpasswd: {expire: false}}",
        "x: &k users\n*k : []",
        "ntp: {}\u{2028}users: []",
    ] {
        let text = format!("#cloud-config\n{sneaky}");
        assert!(check_user_data(&text).is_err(), "{sneaky:?}");
    }
    let ok = "#cloud-config\n'write_files' :\n- path: /x\nruncmd: [\n  ls,\n]";
    assert!(check_user_data(ok).is_ok());
}

// ---------------------------------------------------------------------------------------
// Install trees and storage
// ---------------------------------------------------------------------------------------

fn treeinfo() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            select(
                &[
                    "[images-x86_64]",
                    "[images-aarch64]",
                    "[general]",
                    "[",
                    "]",
                    "kernel = images/pxeboot/vmlinuz",
                    "initrd = images/pxeboot/initrd.img",
                    "kernel=",
                    "initrd",
                    "=",
                    "boot.iso = x",
                    " [images-x86_64] ",
                    ""
                ][..]
            )
            .prop_map(str::to_string),
            any::<String>(),
        ],
        0..12,
    )
    .prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn treeinfo_never_panics(t in prop_oneof![any::<String>(), treeinfo()]) {
        if let Some((kernel, initrd)) = treeinfo_images(&t) {
            prop_assert_eq!(kernel.trim(), kernel.as_str());
            prop_assert_eq!(initrd.trim(), initrd.as_str());
            prop_assert!(!kernel.contains('\n') && !initrd.contains('\n'));
        }
    }

    #[test]
    fn storage_xml_readers_never_panic(s in prop_oneof![any::<String>(), xmlish()]) {
        let _ = parse_pool_xml(&s).source_summary();
        let _ = parse_volume_format(&s);
    }

    #[test]
    fn normalize_path_never_leaves_dot_dot(
        p in prop_oneof![
            any::<String>(),
            prop::collection::vec(select(&["/", "..", ".", "a", "etc", "//", "/./", "/../", "é", " ", "\0"][..]), 0..12)
                .prop_map(|v| v.concat()),
        ],
    ) {
        let _ = check_absolute_path(&p);
        match normalize_path(&p) {
            None => prop_assert!(!p.starts_with('/')),
            Some(n) => {
                prop_assert!(n.is_absolute());
                for c in n.components() {
                    prop_assert!(
                        !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir),
                        "{:?} -> {:?}", p, n
                    );
                }
                // Normalizing is idempotent, and a normalized path passes the check
                // (unless it is too long or has control characters).
                let s = n.to_str().unwrap();
                prop_assert_eq!(normalize_path(s), Some(n.clone()));
                if s.len() <= 1024 && !s.chars().any(char::is_control) {
                    prop_assert_eq!(check_absolute_path(s), Ok(()));
                }
            }
        }
        if check_absolute_path(&p).is_ok() {
            let n = normalize_path(&p).unwrap();
            prop_assert_eq!(n.to_str(), Some(p.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sign-in `next=`
// ---------------------------------------------------------------------------------------

fn next_target() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            select(
                &[
                    "/",
                    "//",
                    "\\",
                    "/\\",
                    "\t",
                    "\n",
                    "\r",
                    "\u{0}",
                    "\u{7f}",
                    "\u{85}",
                    " ",
                    "%2F",
                    "%5C",
                    "evil.example",
                    "@",
                    ":",
                    "?",
                    "#",
                    ".",
                    "..",
                    "https:",
                    "http://x",
                    "javascript:",
                    "\u{3000}",
                    "\u{ff0f}",
                    "\u{2215}",
                    "vms",
                    "host"
                ][..]
            )
            .prop_map(str::to_string),
            any::<String>(),
        ],
        0..10,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn safe_next_stays_on_this_site(n in proptest::option::of(next_target())) {
        let out = safe_next(n.as_deref());
        if out != "/host" {
            prop_assert_eq!(Some(out), n.as_deref());
        }
        prop_assert!(out.starts_with('/') && !out.starts_with("//"));
        prop_assert!(!out.contains("//") && !out.contains('\\'));
        prop_assert!(!out.chars().any(char::is_control));
        let base = url::Url::parse("https://host.example/").unwrap();
        let to = base.join(out).map_err(|e| TestCaseError::fail(format!("{out:?}: {e}")))?;
        prop_assert_eq!(to.scheme(), "https");
        prop_assert_eq!(to.host_str(), Some("host.example"), "{:?} -> {}", out, to);
        prop_assert_eq!(to.port(), None);
        prop_assert_eq!(to.username(), "");
    }
}

// ---------------------------------------------------------------------------------------
// Host network form
// ---------------------------------------------------------------------------------------

const NET_FIELDS: &[&str] = &[
    "kind",
    "name",
    "members",
    "mode",
    "miimon_ms",
    "primary",
    "lacp_rate",
    "bond_name",
    "ports",
    "stp",
    "forward_delay_s",
    "ageing_s",
    "parent",
    "vlan_id",
    "mtu",
    "ipv4",
    "ipv4_address",
    "ipv4_gateway",
    "ipv6",
    "ipv6_address",
    "ipv6_gateway",
    "dns",
    "backend",
];

fn set(f: &mut NetForm, field: &str, value: String) {
    match field {
        "kind" => f.kind = value,
        "name" => f.name = value,
        "members" => f.members = value,
        "mode" => f.mode = value,
        "miimon_ms" => f.miimon_ms = value,
        "primary" => f.primary = value,
        "lacp_rate" => f.lacp_rate = value,
        "bond_name" => f.bond_name = value,
        "ports" => f.ports = value,
        "stp" => f.stp = value,
        "forward_delay_s" => f.forward_delay_s = value,
        "ageing_s" => f.ageing_s = value,
        "parent" => f.parent = value,
        "vlan_id" => f.vlan_id = value,
        "mtu" => f.mtu = value,
        "ipv4" => f.ipv4 = value,
        "ipv4_address" => f.ipv4_address = value,
        "ipv4_gateway" => f.ipv4_gateway = value,
        "ipv6" => f.ipv6 = value,
        "ipv6_address" => f.ipv6_address = value,
        "ipv6_gateway" => f.ipv6_gateway = value,
        "dns" => f.dns = value,
        "backend" => f.backend = value,
        other => panic!("no field {other}"),
    }
}

/// A form of each kind that [`NetForm::to_change`] accepts.
fn valid_net_form(kind: &str) -> NetForm {
    NetForm {
        kind: kind.into(),
        name: "br0".into(),
        members: "eth0 eth1".into(),
        mode: "active-backup".into(),
        miimon_ms: "100".into(),
        primary: "eth0".into(),
        lacp_rate: "".into(),
        bond_name: "bond0".into(),
        ports: "eth2".into(),
        stp: "".into(),
        forward_delay_s: "".into(),
        ageing_s: "300".into(),
        parent: "eth0".into(),
        vlan_id: "10".into(),
        mtu: "1500".into(),
        ipv4: "dhcp".into(),
        ipv4_address: "192.0.2.10/24".into(),
        ipv4_gateway: "192.0.2.1".into(),
        ipv6: "auto".into(),
        ipv6_address: "2001:db8::10/64".into(),
        ipv6_gateway: "2001:db8::1".into(),
        dns: "192.0.2.53, 2001:db8::53".into(),
        backend: "".into(),
    }
}

const NET_KINDS: &[&str] = &["bond", "bridge", "vlan", "recipe", "delete"];

fn net_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        select(
            &[
                "",
                " ",
                "static",
                "off",
                "dhcp",
                "auto",
                "on",
                "0",
                "-1",
                "65536",
                "4095",
                "99999999999",
                "eth0",
                "eth0,eth0",
                "-x",
                "..",
                "a,b c",
                "1.2.3.4",
                "1.2.3.4/33",
                "::/0",
                "224.0.0.1/4",
                "fe80::1%eth0/64",
                "802.3ad",
                "4",
                "7",
                "fast",
                "slow",
                "bond",
                "bridge",
                "vlan",
                "recipe",
                "delete"
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn net_form_from_arbitrary_fields_never_panics_and_errors_name_fields(
        pairs in prop::collection::vec(
            (prop_oneof![4 => select(NET_FIELDS).prop_map(str::to_string), 1 => "[a-z_]{1,8}"], net_value()),
            0..16,
        ),
    ) {
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        let Ok(form) = serde_urlencoded::from_str::<NetForm>(&body) else {
            return Ok(());
        };
        if let Err(errs) = form.to_change() {
            prop_assert!(!errs.is_empty(), "refused without saying why: {:?}", form);
            for e in &errs {
                prop_assert!(NET_FIELDS.contains(&e.field), "{:?}", e);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn net_form_reports_a_bad_value_at_its_own_field(
        kind in select(NET_KINDS),
        field in select(NET_FIELDS),
        value in net_value(),
    ) {
        let base = valid_net_form(kind);
        prop_assert!(base.to_change().is_ok(), "{}: {:?}", kind, base.to_change());
        // Another valid kind asks for other fields: not this property.
        prop_assume!(!(field == "kind" && NET_KINDS.contains(&value.trim())));
        let mut form = base;
        set(&mut form, field, value.clone());
        if let Err(errs) = form.to_change() {
            prop_assert!(!errs.is_empty());
            for e in &errs {
                prop_assert_eq!(e.field, field, "{} {}={:?}: {:?}", kind, field, value, errs);
            }
        }
    }
}
