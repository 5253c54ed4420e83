//! Cloud-init NoCloud seeds: the provisioning fields as typed, their rules, and the
//! `meta-data` / `user-data` files rendered from them. Pure: no I/O; the password
//! arrives here already hashed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt::Write as _;

/// Largest extra user-data accepted (cloud-config text appended to virtdeck's own).
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;
/// Most SSH public keys on one VM.
pub const MAX_SSH_KEYS: usize = 32;

/// A field-level problem: the form field name and the message shown there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiFieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> CiFieldError {
    CiFieldError {
        field,
        message: message.into(),
    }
}

/// Validates a guest host name (RFC 1123: dot-separated labels of letters, digits
/// and hyphens, at most 63 characters each and 253 in all).
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("A host name has 1 to 253 characters.".into());
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("Each part of a host name (between dots) has 1 to 63 characters.".into());
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("A host name uses only letters, digits, hyphens and dots.".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("A part of a host name may not start or end with a hyphen.".into());
        }
    }
    Ok(())
}

/// Validates the guest user's login name (what `useradd` accepts on every distribution).
pub fn check_user_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || s.len() > 32
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(
            "A user name starts with a lower-case letter and has up to 32 lower-case letters, digits, '-' or '_'."
                .into(),
        );
    }
    if s == "root" {
        return Err("Choose a user other than root; it gets sudo rights.".into());
    }
    Ok(())
}

/// Key types OpenSSH accepts in authorized_keys.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Validates one OpenSSH public key line: `type base64 [comment]`, where the base64
/// blob decodes to a key of that same type.
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{} is not an OpenSSH public key line (type, key, optional comment).",
            shorten(line)
        ));
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "{} is not a public key type OpenSSH accepts (e.g. ssh-ed25519, ssh-rsa).",
            shorten(kind)
        ));
    }
    let bytes = STANDARD
        .decode(blob)
        .map_err(|_| format!("The key of type {kind} is not valid base64."))?;
    // The blob starts with the key type as an SSH string: u32 length, then the name.
    let inner = bytes
        .get(0..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    if inner != Some(kind.as_bytes()) || bytes.len() < 4 + kind.len() + 16 {
        return Err(format!(
            "The {kind} key's data does not hold a {kind} key (copy the whole line from the .pub file)."
        ));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err("A key line may not contain control characters.".into());
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    let t: String = s.chars().take(24).collect();
    if t.len() < s.len() {
        format!("\"{t}…\"")
    } else {
        format!("\"{t}\"")
    }
}

/// Keys virtdeck writes itself, which extra user-data may not set again.
pub const RESERVED_KEYS: &[&str] = &[
    "hostname",
    "fqdn",
    "preserve_hostname",
    "users",
    "ssh_pwauth",
    "chpasswd",
    "password",
];

/// Checks the optional extra user-data: a `#cloud-config` document whose top-level
/// keys do not repeat the ones virtdeck writes. Returns its body (after the header).
pub fn check_user_data(text: &str) -> Result<String, String> {
    let text = text.replace("\r\n", "\n");
    if text.len() > MAX_USER_DATA_BYTES {
        return Err(format!(
            "Extra user-data is limited to {} KiB.",
            MAX_USER_DATA_BYTES / 1024
        ));
    }
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("#cloud-config") {
        return Err("Extra user-data must start with a #cloud-config line.".into());
    }
    let body: Vec<&str> = lines.collect();
    for (i, l) in body.iter().enumerate() {
        let n = i + 2;
        if l.starts_with('\t') || l.trim_start_matches(' ').starts_with('\t') {
            return Err(format!("Line {n}: YAML is indented with spaces, not tabs."));
        }
        // U+2028/U+2029 end a line for YAML 1.1 readers (cloud-init's), not for `lines()`.
        if l.chars()
            .any(|c| (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            return Err(format!("Line {n} contains a control character."));
        }
        if l.starts_with("---") || l.starts_with("...") {
            return Err(format!(
                "Line {n}: give one YAML document (no '---' or '...')."
            ));
        }
        let Ok(key) = top_level_key(l) else {
            return Err(format!(
                "Line {n}: write a top-level key as a plain name and ':' (no '?', '<<', \
                 anchors, tags, aliases or escapes)."
            ));
        };
        if let Some(key) = key {
            if RESERVED_KEYS.contains(&key) {
                return Err(format!(
                    "Line {n}: virtdeck sets '{key}' from the fields above; remove it here."
                ));
            }
        }
    }
    let mut out = body.join("\n");
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The mapping key a line starts at column 0, if any (`key:` or `"key":`). `Err` for a
/// line at column 0 that could name a key some other way YAML has (`? key`, `&anchor key:`,
/// `!!str key:`, `*alias :`, `<<:` merges, escapes in a quoted key), which would let a
/// reserved key through unseen.
fn top_level_key(line: &str) -> Result<Option<&str>, ()> {
    if line.is_empty() || line.starts_with([' ', '#', '-']) {
        return Ok(None);
    }
    if line.starts_with('?') {
        return Err(());
    }
    let Some((key, _)) = line.split_once(':') else {
        return Ok(None);
    };
    let key = key.trim_end_matches([' ', '\t']);
    let plain = |k: &str| {
        k.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    };
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| key.strip_prefix(*q).and_then(|k| k.strip_suffix(*q)))
        .unwrap_or(key);
    if plain(inner) {
        Ok(Some(inner))
    } else {
        Err(())
    }
}

/// What a cloud-init seed says, validated; the password only as its crypt hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub instance_id: String,
    pub hostname: String,
    pub user: String,
    /// SHA-512 crypt (`$6$…`), never the password itself.
    pub password_hash: Option<String>,
    pub ssh_keys: Vec<String>,
    /// Extra `#cloud-config` body, appended after virtdeck's keys.
    pub extra_user_data: String,
}

/// The seed fields as typed (the password is replaced by whether one was given).
#[derive(Debug, Clone, Default)]
pub struct SeedInput<'a> {
    pub vm_name: &'a str,
    pub hostname: &'a str,
    pub user: &'a str,
    pub has_password: bool,
    pub ssh_keys: &'a str,
    pub user_data: &'a str,
}

/// The validated parts of a seed (everything but the instance id and the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSeed {
    pub hostname: String,
    pub user: String,
    pub ssh_keys: Vec<String>,
    pub extra_user_data: String,
}

/// Validates every field, returning all problems at their fields.
pub fn check_seed(input: &SeedInput<'_>) -> Result<CheckedSeed, Vec<CiFieldError>> {
    let mut errors = Vec::new();
    let hostname = match input.hostname.trim() {
        "" => input.vm_name.trim().to_ascii_lowercase().replace('_', "-"),
        h => h.to_string(),
    };
    if let Err(e) = check_hostname(&hostname) {
        errors.push(err("ci_hostname", e));
    }
    let user = input.user.trim().to_string();
    if user.is_empty() {
        errors.push(err("ci_user", "Give the user cloud-init creates."));
    } else if let Err(e) = check_user_name(&user) {
        errors.push(err("ci_user", e));
    }
    let ssh_keys: Vec<String> = input
        .ssh_keys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if ssh_keys.len() > MAX_SSH_KEYS {
        errors.push(err(
            "ci_ssh_keys",
            format!("Give at most {MAX_SSH_KEYS} keys."),
        ));
    }
    for (i, k) in ssh_keys.iter().enumerate() {
        if let Err(e) = check_ssh_key(k) {
            errors.push(err("ci_ssh_keys", format!("Key {}: {e}", i + 1)));
            break;
        }
    }
    if ssh_keys.is_empty() && !input.has_password {
        errors.push(err(
            "ci_ssh_keys",
            "Give an SSH public key or a password, or nobody can sign in.",
        ));
    }
    let extra_user_data = if input.user_data.trim().is_empty() {
        String::new()
    } else {
        match check_user_data(input.user_data) {
            Ok(body) => body,
            Err(e) => {
                errors.push(err("ci_user_data", e));
                String::new()
            }
        }
    };
    if errors.is_empty() {
        Ok(CheckedSeed {
            hostname,
            user,
            ssh_keys,
            extra_user_data,
        })
    } else {
        Err(errors)
    }
}

/// A YAML double-quoted scalar: every character that could end or change the string
/// is escaped, so no input can add keys.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // Also the line/paragraph separators and BOM (breaks or markers to YAML
            // 1.1 readers) and U+FFFE/U+FFFF, which YAML readers refuse outright.
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `meta-data` file: the instance id (the VM's UUID) and its host name.
pub fn meta_data(seed: &Seed) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_quote(&seed.instance_id),
        yaml_quote(&seed.hostname)
    )
}

/// The `user-data` file: `#cloud-config` with the host name and one sudo user (its
/// password hash and SSH keys), then the extra user-data as given.
pub fn user_data(seed: &Seed) -> String {
    let mut s = String::from("#cloud-config\n");
    let _ = writeln!(s, "hostname: {}", yaml_quote(&seed.hostname));
    s.push_str("preserve_hostname: false\n");
    s.push_str("users:\n");
    let _ = writeln!(s, "  - name: {}", yaml_quote(&seed.user));
    s.push_str("    shell: /bin/bash\n");
    match &seed.password_hash {
        Some(hash) => {
            s.push_str("    sudo: \"ALL=(ALL) ALL\"\n");
            s.push_str("    lock_passwd: false\n");
            let _ = writeln!(s, "    hashed_passwd: {}", yaml_quote(hash));
        }
        None => {
            s.push_str("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
            s.push_str("    lock_passwd: true\n");
        }
    }
    if !seed.ssh_keys.is_empty() {
        s.push_str("    ssh_authorized_keys:\n");
        for k in &seed.ssh_keys {
            let _ = writeln!(s, "      - {}", yaml_quote(k));
        }
    }
    let _ = writeln!(
        s,
        "ssh_pwauth: {}",
        if seed.password_hash.is_some() {
            "true"
        } else {
            "false"
        }
    );
    if !seed.extra_user_data.is_empty() {
        s.push_str("# extra user-data given at create\n");
        s.push_str(&seed.extra_user_data);
    }
    s
}

/// The name of a VM's seed volume in its pool.
pub fn seed_volume_name(vm: &str) -> String {
    format!("{vm}-cidata.iso")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed ed25519 public key line (type string + 32 key bytes).
    fn ed25519_line(comment: &str) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        format!("ssh-ed25519 {} {comment}", STANDARD.encode(blob))
    }

    fn seed() -> Seed {
        Seed {
            instance_id: "0b5c2a4e-1f00-4c1e-9a7b-2a5d3c4e5f60".into(),
            hostname: "web1".into(),
            user: "ops".into(),
            password_hash: Some("$6$salt$hash".into()),
            ssh_keys: vec![ed25519_line("ops@laptop")],
            extra_user_data: String::new(),
        }
    }

    #[test]
    fn host_names() {
        for ok in ["web1", "web-1.example.com", "a", &"x".repeat(63)] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "we b",
            "web_1",
            "a..b",
            "web1\nhostname: evil",
            &"x".repeat(64),
        ] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_names() {
        for ok in ["ops", "_svc", "deploy-2", "a_b"] {
            assert!(check_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Ops", "1ops", "o ps", "ops:", "root", &"a".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ssh_keys() {
        assert!(check_ssh_key(&ed25519_line("me@host")).is_ok());
        assert!(check_ssh_key(ed25519_line("").trim()).is_ok());
        // Wrong type name for the blob, unknown type, bad base64, truncated blob.
        let line = ed25519_line("x").replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(check_ssh_key(&line).unwrap_err().contains("does not hold"));
        assert!(check_ssh_key("ssh-foo AAAA").unwrap_err().contains("type"));
        assert!(check_ssh_key("ssh-ed25519 !!!!")
            .unwrap_err()
            .contains("base64"));
        assert!(check_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5").is_err());
        assert!(check_ssh_key("just-one-word").is_err());
    }

    #[test]
    fn extra_user_data_rules() {
        assert_eq!(
            check_user_data("#cloud-config\npackages:\n  - htop").unwrap(),
            "packages:\n  - htop\n"
        );
        assert!(check_user_data("packages: [htop]")
            .unwrap_err()
            .contains("#cloud-config"));
        assert!(check_user_data("#!/bin/sh\necho hi")
            .unwrap_err()
            .contains("#cloud-config"));
        assert!(check_user_data("#cloud-config\nusers:\n  - name: x")
            .unwrap_err()
            .contains("'users'"));
        assert!(check_user_data("#cloud-config\n\"hostname\": x")
            .unwrap_err()
            .contains("'hostname'"));
        assert!(check_user_data("#cloud-config\nruncmd:\n\t- ls")
            .unwrap_err()
            .contains("tabs"));
        assert!(check_user_data("#cloud-config\n---\nx: 1").is_err());
        // Every other way YAML has to name a top-level key is refused, not read past.
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
        assert!(
            check_user_data("#cloud-config\n'write_files' :\n- path: /x\nruncmd: [\n  ls,\n]")
                .is_ok()
        );
        let big = format!(
            "#cloud-config\n{}",
            "a: 1\n".repeat(MAX_USER_DATA_BYTES / 5)
        );
        assert!(check_user_data(&big).unwrap_err().contains("KiB"));
    }

    #[test]
    fn seed_fields_are_checked_at_their_fields() {
        let bad = check_seed(&SeedInput {
            vm_name: "web1",
            hostname: "bad host",
            user: "Root",
            has_password: false,
            ssh_keys: "ssh-rsa nonsense",
            user_data: "packages: []",
        })
        .unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec!["ci_hostname", "ci_user", "ci_ssh_keys", "ci_user_data"]
        );
        let none = check_seed(&SeedInput {
            vm_name: "web1",
            user: "ops",
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(none[0].field, "ci_ssh_keys");
        assert!(none[0].message.contains("password"));

        let key = ed25519_line("a@b");
        let ok = check_seed(&SeedInput {
            vm_name: "Web_1",
            hostname: "",
            user: " ops ",
            has_password: false,
            ssh_keys: &format!("\n# laptop\n{key}\n\n"),
            user_data: "",
        })
        .unwrap();
        assert_eq!(ok.hostname, "web-1", "default host name from the VM name");
        assert_eq!(ok.user, "ops");
        assert_eq!(ok.ssh_keys, vec![key]);
    }

    #[test]
    fn quoting_cannot_add_keys() {
        assert_eq!(yaml_quote("plain"), "\"plain\"");
        assert_eq!(
            yaml_quote("a\"\nusers: evil\\"),
            "\"a\\\"\\nusers: evil\\\\\""
        );
        assert_eq!(yaml_quote("\u{7}"), "\"\\u0007\"");
        // Non-characters that YAML readers refuse as raw input are escaped too.
        assert_eq!(yaml_quote("\u{fffe}\u{ffff}"), "\"\\ufffe\\uffff\"");
        // A comment in a key line stays inside the quotes, on one line.
        let mut s = seed();
        s.ssh_keys = vec![format!("{} \"x\" # y", ed25519_line("c"))];
        let ud = user_data(&s);
        let key_line = ud.lines().find(|l| l.starts_with("      - ")).unwrap();
        assert!(key_line.ends_with("\\\"x\\\" # y\""), "{key_line}");
    }

    #[test]
    fn renders_meta_data() {
        assert_eq!(
            meta_data(&seed()),
            "instance-id: \"0b5c2a4e-1f00-4c1e-9a7b-2a5d3c4e5f60\"\nlocal-hostname: \"web1\"\n"
        );
    }

    #[test]
    fn renders_user_data_with_password_and_keys() {
        let s = seed();
        let want = format!(
            "#cloud-config\n\
             hostname: \"web1\"\n\
             preserve_hostname: false\n\
             users:\n  \
             - name: \"ops\"\n    \
             shell: /bin/bash\n    \
             sudo: \"ALL=(ALL) ALL\"\n    \
             lock_passwd: false\n    \
             hashed_passwd: \"$6$salt$hash\"\n    \
             ssh_authorized_keys:\n      \
             - \"{}\"\n\
             ssh_pwauth: true\n",
            s.ssh_keys[0]
        );
        assert_eq!(user_data(&s), want);
    }

    #[test]
    fn renders_user_data_keys_only_with_extra_part() {
        let mut s = seed();
        s.password_hash = None;
        s.extra_user_data = check_user_data("#cloud-config\npackages:\n  - htop").unwrap();
        let ud = user_data(&s);
        assert!(ud.contains("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n"));
        assert!(!ud.contains("hashed_passwd"));
        assert!(ud.contains("ssh_pwauth: false\n"));
        assert!(ud.ends_with("# extra user-data given at create\npackages:\n  - htop\n"));
        assert_eq!(ud.matches("#cloud-config").count(), 1);
    }
}
