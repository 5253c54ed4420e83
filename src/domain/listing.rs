//! Which VMs a list page shows: a name search, a state filter and pages of a fixed size.

use super::vm::VmState;

/// Rows per page unless the admin picks another size.
pub const DEFAULT_PER_PAGE: usize = 50;
/// The page sizes offered.
pub const PER_PAGE_CHOICES: [usize; 4] = [25, 50, 100, 200];

/// The states the list can be narrowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFilter {
    #[default]
    Any,
    Running,
    Paused,
    ShutOff,
    /// Crashed, shutting down, suspended or unknown: the ones that need a look.
    Other,
}

impl StateFilter {
    pub const ALL: [StateFilter; 5] = [
        StateFilter::Any,
        StateFilter::Running,
        StateFilter::Paused,
        StateFilter::ShutOff,
        StateFilter::Other,
    ];

    /// The value in the URL (`state=`); unknown values mean "any".
    pub fn parse(text: &str) -> StateFilter {
        StateFilter::ALL
            .into_iter()
            .find(|f| f.key() == text)
            .unwrap_or_default()
    }

    pub fn key(self) -> &'static str {
        match self {
            StateFilter::Any => "",
            StateFilter::Running => "running",
            StateFilter::Paused => "paused",
            StateFilter::ShutOff => "shut-off",
            StateFilter::Other => "other",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StateFilter::Any => "any state",
            StateFilter::Running => "running",
            StateFilter::Paused => "paused",
            StateFilter::ShutOff => "shut off",
            StateFilter::Other => "other (crashed, suspended, …)",
        }
    }

    pub fn admits(self, state: VmState) -> bool {
        match self {
            StateFilter::Any => true,
            StateFilter::Running => state == VmState::Running,
            StateFilter::Paused => state == VmState::Paused,
            StateFilter::ShutOff => state == VmState::ShutOff,
            StateFilter::Other => {
                !matches!(state, VmState::Running | VmState::Paused | VmState::ShutOff)
            }
        }
    }
}

/// What the admin asked to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Part of the name, matched without regard to case; empty for all.
    pub search: String,
    pub state: StateFilter,
    /// 1-based; out-of-range pages show the nearest page.
    pub page: usize,
    pub per_page: usize,
    /// Only VMs with this tag (lower case); empty for all.
    pub tag: String,
}

impl ListQuery {
    /// From the URL's values, each optional and forgiving: a bad page number is page 1,
    /// a page size not offered is the default.
    pub fn from_params(search: &str, state: &str, page: &str, per_page: &str) -> ListQuery {
        ListQuery {
            search: search.trim().chars().take(100).collect(),
            state: StateFilter::parse(state),
            page: page.trim().parse().ok().filter(|p| *p >= 1).unwrap_or(1),
            per_page: per_page
                .trim()
                .parse()
                .ok()
                .filter(|n| PER_PAGE_CHOICES.contains(n))
                .unwrap_or(DEFAULT_PER_PAGE),
            tag: String::new(),
        }
    }

    /// The same query, showing only VMs tagged `tag` (as typed; empty for all).
    pub fn with_tag(mut self, tag: &str) -> ListQuery {
        self.tag = tag.trim().to_ascii_lowercase().chars().take(32).collect();
        self
    }

    pub fn is_filtered(&self) -> bool {
        !self.search.is_empty() || self.state != StateFilter::Any || !self.tag.is_empty()
    }

    /// Whether a VM with this name, state and tags is in the list.
    pub fn admits(&self, name: &str, state: VmState, tags: &[String]) -> bool {
        self.state.admits(state)
            && super::vm_labels::matches(tags, Some(&self.tag))
            && (self.search.is_empty() || name.to_lowercase().contains(&self.search.to_lowercase()))
    }
}

/// One page of a filtered list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1-based, within 1..=pages.
    pub number: usize,
    pub pages: usize,
    /// Rows that passed the filter, on all pages.
    pub matching: usize,
    /// Index range of this page's rows among the matching ones.
    pub start: usize,
    pub end: usize,
}

impl Page {
    pub fn of(query: &ListQuery, matching: usize) -> Page {
        let per_page = query.per_page.max(1);
        let pages = matching.div_ceil(per_page).max(1);
        let number = query.page.clamp(1, pages);
        let start = (number - 1) * per_page;
        Page {
            number,
            pages,
            matching,
            start,
            end: (start + per_page).min(matching),
        }
    }

    pub fn has_previous(&self) -> bool {
        self.number > 1
    }

    pub fn has_next(&self) -> bool {
        self.number < self.pages
    }
}

/// The rows of `query`'s page among `rows`, and the page.
pub fn select<'a, T>(
    rows: &'a [T],
    query: &ListQuery,
    key: impl Fn(&T) -> (&str, VmState, &[String]),
) -> (Vec<&'a T>, Page) {
    let matching = matching(rows, query, key);
    let page = Page::of(query, matching.len());
    let shown = matching[page.start..page.end].to_vec();
    (shown, page)
}

/// Every row the query's name, state and tag filters admit, on every page.
pub fn matching<'a, T>(
    rows: &'a [T],
    query: &ListQuery,
    key: impl Fn(&T) -> (&str, VmState, &[String]),
) -> Vec<&'a T> {
    rows.iter()
        .filter(|r| {
            let (name, state, tags) = key(r);
            query.admits(name, state, tags)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(search: &str, state: &str, page: &str, per_page: &str) -> ListQuery {
        ListQuery::from_params(search, state, page, per_page)
    }

    fn vms(n: usize) -> Vec<(String, VmState)> {
        (0..n)
            .map(|i| {
                let state = if i % 3 == 0 {
                    VmState::ShutOff
                } else {
                    VmState::Running
                };
                (format!("web-{i:04}"), state)
            })
            .collect()
    }

    fn key(r: &(String, VmState)) -> (&str, VmState, &[String]) {
        (r.0.as_str(), r.1, &[])
    }

    #[test]
    fn the_tag_filter_keeps_the_vms_with_that_tag() {
        let tagged = vec!["web".to_string(), "prod".to_string()];
        let prod = q("", "", "", "").with_tag(" PROD ");
        assert!(prod.admits("a", VmState::Running, &tagged));
        assert!(!prod.admits("a", VmState::Running, &[]));
        assert!(q("", "", "", "").admits("a", VmState::Running, &[]));
        assert!(prod.is_filtered());
    }

    fn names(rows: &[&(String, VmState)]) -> Vec<String> {
        rows.iter().map(|r| r.0.clone()).collect()
    }

    #[test]
    fn params_are_forgiving() {
        let d = q("", "", "", "");
        assert_eq!(
            d,
            ListQuery {
                search: String::new(),
                state: StateFilter::Any,
                page: 1,
                per_page: DEFAULT_PER_PAGE,
                tag: String::new(),
            }
        );
        assert_eq!(q("", "bogus", "0", "7").page, 1);
        assert_eq!(q("", "bogus", "-3", "7").per_page, DEFAULT_PER_PAGE);
        assert_eq!(q("", "paused", "x", "100").state, StateFilter::Paused);
        assert_eq!(q("", "", "4", "100").per_page, 100);
        assert_eq!(q("  Web ", "", "", "").search, "Web");
        assert_eq!(q(&"x".repeat(500), "", "", "").search.len(), 100);
    }

    #[test]
    fn pages_split_the_list_and_clamp() {
        let rows = vms(120);
        let (shown, page) = select(&rows, &q("", "", "1", "50"), key);
        assert_eq!((page.number, page.pages, page.matching), (1, 3, 120));
        assert_eq!(shown.len(), 50);
        assert_eq!(shown[0].0, "web-0000");
        assert!(!page.has_previous() && page.has_next());
        let (shown, page) = select(&rows, &q("", "", "3", "50"), key);
        assert_eq!(names(&shown).first().map(String::as_str), Some("web-0100"));
        assert_eq!(shown.len(), 20);
        assert!(page.has_previous() && !page.has_next());
        // Past the end: the last page.
        let (_, page) = select(&rows, &q("", "", "99", "50"), key);
        assert_eq!(page.number, 3);
    }

    #[test]
    fn search_and_state_narrow_the_list() {
        let rows = vms(120);
        let (shown, page) = select(&rows, &q("WEB-001", "", "", ""), key);
        assert_eq!(page.matching, 10);
        assert!(names(&shown).iter().all(|n| n.starts_with("web-001")));
        let (shown, page) = select(&rows, &q("", "shut-off", "", ""), key);
        assert_eq!(page.matching, 40);
        assert!(shown.iter().all(|r| r.1 == VmState::ShutOff));
        let (shown, page) = select(&rows, &q("nothing", "", "", ""), key);
        assert!(shown.is_empty());
        assert_eq!((page.number, page.pages, page.matching), (1, 1, 0));
    }

    #[test]
    fn other_means_the_states_that_need_a_look() {
        assert!(StateFilter::Other.admits(VmState::Crashed));
        assert!(StateFilter::Other.admits(VmState::Suspended));
        assert!(!StateFilter::Other.admits(VmState::Running));
        for f in StateFilter::ALL {
            assert_eq!(StateFilter::parse(f.key()), f);
        }
    }
}
