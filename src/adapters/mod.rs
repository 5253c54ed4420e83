//! One module per outside system, and the only places that touch them: libvirt (the
//! `virt` crate behind the [`crate::hypervisor::Hypervisor`] trait) and the KVM probe,
//! outbound HTTP (`http_fetch`, with its address policy), genisoimage (`seed_iso`),
//! virt-sysprep (`sysprep`), the host's PAM stack and account database (`pam`), the kernel's netlink, network namespaces and `/proc/sys`
//! (`netlink`, `netns`, `sysctl_io`). SQLite is `crate::store`.

pub mod backup_files;
pub mod http_fetch;
pub mod kvm_probe;
pub mod libvirt;
pub mod netlink;
pub mod netns;
pub mod pam;
pub mod seed_iso;
pub mod sysctl_io;
pub mod sysprep;
