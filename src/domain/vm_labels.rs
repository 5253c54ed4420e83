//! Tags and notes of a VM. They live in the VM's own definition, so they travel with it
//! (clones, migration, a definition copied elsewhere): the tags as an element in
//! virtdeck's namespace under `<metadata>`, the notes as `<description>`.

use super::create_plan::{field, FieldError};
use quick_xml::events::BytesText;
use quick_xml::Writer;

/// The namespace of virtdeck's element under `<metadata>`.
pub const METADATA_NS: &str = "https://virtdeck.example/xmlns/vm/1";
/// The prefix libvirt writes it with (`<virtdeck:vm xmlns:virtdeck=…>`).
pub const METADATA_PREFIX: &str = "virtdeck";
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_CHARS: usize = 32;
pub const MAX_NOTES_CHARS: usize = 4000;

/// Tags and notes as checked: tags lower case, unique, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    pub tags: Vec<String>,
    pub notes: String,
}

/// Whether `tag` is one: a lower-case letter or digit, then letters, digits, `-`, `_`,
/// `.`, at most [`MAX_TAG_CHARS`].
pub fn tag_is_valid(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && tag.len() <= MAX_TAG_CHARS
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Tags as typed in a form: separated by commas or spaces, any case.
pub fn split_tags(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Checks tags and notes; every problem at its field.
pub fn check(tags: &[String], notes: &str) -> Result<Labels, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim().to_ascii_lowercase();
        if !tag_is_valid(&tag) {
            errors.push(field(
                "tags",
                format!(
                    "“{tag}” is not a tag: use up to {MAX_TAG_CHARS} lower-case letters, digits, \
                     '-', '_' or '.', starting with a letter or digit"
                ),
            ));
            break;
        }
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    if kept.len() > MAX_TAGS {
        errors.push(field(
            "tags",
            format!("at most {MAX_TAGS} tags per VM ({} given)", kept.len()),
        ));
    }
    let notes = notes.replace("\r\n", "\n");
    if notes.chars().count() > MAX_NOTES_CHARS {
        errors.push(field(
            "notes",
            format!("notes are at most {MAX_NOTES_CHARS} characters"),
        ));
    } else if notes
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        errors.push(field(
            "notes",
            "notes may not contain control characters (other than new lines and tabs)",
        ));
    }
    if errors.is_empty() {
        Ok(Labels { tags: kept, notes })
    } else {
        Err(errors)
    }
}

/// The element libvirt keeps under `<metadata>` for `tags` (libvirt adds the namespace
/// and prefix), or `None` to remove it when there are none.
pub fn metadata_xml(tags: &[String]) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    let mut w = Writer::new(Vec::new());
    let written = w.create_element("vm").write_inner_content(|w| {
        for tag in tags {
            w.create_element("tag")
                .write_text_content(BytesText::new(tag))?;
        }
        Ok::<_, std::io::Error>(())
    });
    written.ok()?;
    String::from_utf8(w.into_inner()).ok()
}

/// Whether a VM with `tags` is shown under the filter `wanted` (none: every VM).
pub fn matches(tags: &[String], wanted: Option<&str>) -> bool {
    match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        None => true,
        Some(w) => tags.iter().any(|t| t.eq_ignore_ascii_case(w)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_are_lower_case_unique_and_checked() {
        let l = check(&tags(&["Web", "prod", "web", "db-1.eu_west"]), "").unwrap();
        assert_eq!(l.tags, tags(&["web", "prod", "db-1.eu_west"]));
        for bad in ["-x", "a b", "a<b", "é", "", &"x".repeat(33)] {
            let e = check(&tags(&[bad]), "").unwrap_err();
            assert_eq!(e[0].field, "tags", "{bad:?}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        assert!(check(&many, "").unwrap_err()[0]
            .message
            .contains("at most 16"));
    }

    #[test]
    fn notes_keep_lines_and_refuse_control_characters() {
        let l = check(&[], "line one\r\nline two\twith a tab").unwrap();
        assert_eq!(l.notes, "line one\nline two\twith a tab");
        assert_eq!(check(&[], "bell\u{7}").unwrap_err()[0].field, "notes");
        assert_eq!(check(&[], &"n".repeat(4001)).unwrap_err()[0].field, "notes");
        // Markup is text: escaped by the XML writer, never interpreted.
        assert!(check(&[], "</description><devices/>").is_ok());
    }

    #[test]
    fn form_text_splits_on_commas_and_spaces() {
        assert_eq!(split_tags(" web, DB  prod,,"), tags(&["web", "db", "prod"]));
    }

    #[test]
    fn the_metadata_element_holds_each_tag_escaped() {
        assert_eq!(metadata_xml(&[]), None);
        assert_eq!(
            metadata_xml(&tags(&["web", "db"])).unwrap(),
            "<vm><tag>web</tag><tag>db</tag></vm>"
        );
    }

    #[test]
    fn the_filter_matches_any_tag_case_blind() {
        let t = tags(&["web", "prod"]);
        assert!(matches(&t, None));
        assert!(matches(&t, Some("")));
        assert!(matches(&t, Some("PROD")));
        assert!(!matches(&t, Some("db")));
    }
}
