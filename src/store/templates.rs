//! VMs marked as templates.

use super::{Store, StoreResult};
use rusqlite::params;
use serde::Serialize;

/// A template mark: which VM, who marked it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRow {
    pub name: String,
    pub marked_by: String,
    pub marked_at: i64,
}

impl Store {
    /// Marks a VM as a template; marking it again keeps the first mark.
    pub fn mark_template(&self, name: &str, by: &str, at: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO templates (name, marked_by, marked_at) VALUES (?1, ?2, ?3)",
                params![name, by, at],
            )
            .map(|_| ())
        })
    }

    /// Removes the mark; true if there was one.
    pub fn unmark_template(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM templates WHERE name = ?1", [name])
                .map(|n| n > 0)
        })
    }

    /// Every mark, by name.
    pub fn templates(&self) -> StoreResult<Vec<TemplateRow>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT name, marked_by, marked_at FROM templates ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(TemplateRow {
                    name: r.get(0)?,
                    marked_by: r.get(1)?,
                    marked_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn is_template(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM templates WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_reopen_and_unmark_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let s = Store::open(&path).unwrap();
            s.mark_template("base", "alice", 10).unwrap();
            s.mark_template("base", "bob", 20).unwrap();
            assert!(s.is_template("base").unwrap());
            assert!(!s.is_template("other").unwrap());
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.templates().unwrap(),
            vec![TemplateRow {
                name: "base".into(),
                marked_by: "alice".into(),
                marked_at: 10
            }]
        );
        assert!(s.unmark_template("base").unwrap());
        assert!(!s.unmark_template("base").unwrap());
        assert!(s.templates().unwrap().is_empty());
    }
}
