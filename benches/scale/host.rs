//! The benchmark's big host: the demo host's networks, interfaces and pools with its six
//! VMs replaced by `count` generated ones, for libvirt's test driver (`test:///PATH`).
//! Generated at run time so the repository does not carry a huge file.

/// The states the generated VMs cycle through: 6 of 10 running, 1 paused, 3 shut off
/// (test-driver run state numbers: 1 running, 3 paused, 5 shut off).
const RUNSTATES: [u8; 10] = [1, 1, 1, 1, 1, 1, 3, 5, 5, 5];

/// CPUs and memory of the generated host: big enough that 1,000 small VMs are a
/// plausible (overcommitted) load, like a large shop's biggest machine.
pub const HOST_CPUS: u32 = 128;
pub const HOST_MEMORY_KIB: u64 = 1024 * 1024 * 1024;

/// The name of the `i`-th generated VM (1-based), e.g. `vm0042`.
pub fn vm_name(i: usize) -> String {
    format!("vm{i:04}")
}

/// Whether the `i`-th generated VM is running.
pub fn is_running(i: usize) -> bool {
    RUNSTATES[i % RUNSTATES.len()] == 1
}

/// The demo host XML with its domains replaced by `count` generated ones and its CPU and
/// memory raised to [`HOST_CPUS`] and [`HOST_MEMORY_KIB`].
pub fn scale_host_xml(demo_host_xml: &str, count: usize) -> Result<String, String> {
    let first = demo_host_xml
        .find("<domain ")
        .ok_or("the demo host has no <domain> to take the place of")?;
    // A top-level domain's end, at the start of its line (node devices have a
    // `<domain>` number of their own).
    let end_tag = "\n  </domain>";
    let last = demo_host_xml
        .rfind(end_tag)
        .ok_or("the demo host has no </domain>")?
        + end_tag.len();
    let mut out = String::with_capacity(demo_host_xml.len() + count * 1500);
    out.push_str(&set_host_size(&demo_host_xml[..first])?);
    for i in 1..=count {
        out.push_str(&domain_xml(i));
    }
    out.push_str(&demo_host_xml[last..]);
    Ok(out)
}

/// Sets the host header's CPU topology (4 sockets × 16 cores × 2 threads, which the test
/// driver multiplies into its CPU count) and memory.
fn set_host_size(header: &str) -> Result<String, String> {
    let mut header = header.to_string();
    for (tag, value) in [
        ("sockets", "4".to_string()),
        ("cores", "16".to_string()),
        ("threads", "2".to_string()),
        ("active", HOST_CPUS.to_string()),
        ("memory", HOST_MEMORY_KIB.to_string()),
    ] {
        header = replace_element(&header, tag, &value)?;
    }
    Ok(header)
}

fn replace_element(text: &str, tag: &str, value: &str) -> Result<String, String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text
        .find(&open)
        .ok_or_else(|| format!("the demo host has no <{tag}>"))?
        + open.len();
    let end = start
        + text[start..]
            .find(&close)
            .ok_or_else(|| format!("the demo host has no </{tag}>"))?;
    Ok(format!("{}{value}{}", &text[..start], &text[end..]))
}

fn domain_xml(i: usize) -> String {
    let name = vm_name(i);
    let memory_kib = (i % 4 + 1) as u64 * 1024 * 1024;
    let vcpus = i % 2 + 1;
    let runstate = RUNSTATES[i % RUNSTATES.len()];
    let (hi, lo) = ((i >> 8) & 0xff, i & 0xff);
    format!(
        "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name}</name>
    <uuid>00000000-0000-4000-8000-{i:012x}</uuid>
    <title>Generated VM {i}</title>
    <memory unit='KiB'>{memory_kib}</memory>
    <currentMemory unit='KiB'>{memory_kib}</currentMemory>
    <vcpu placement='static'>{vcpus}</vcpu>
    <os>
      <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
      <boot dev='hd'/>
    </os>
    <clock offset='utc'/>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/{name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='bridge'>
        <mac address='52:54:01:00:{hi:02x}:{lo:02x}'/>
        <source bridge='br0'/>
        <model type='virtio'/>
      </interface>
      <serial type='pty'>
        <target port='0'/>
      </serial>
      <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    </devices>
    <test:runstate>{runstate}</test:runstate>
  </domain>
"
    )
}
