//! Walking `fetch-completions` pages: the one place the contract's paging
//! rule lives. A page without `next-cursor` keeps the position of the one
//! before it; `more = false` ends the walk.

/// The position in a walk over completion pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionPages {
    cursor: Option<String>,
    more: bool,
}

impl CompletionPages {
    /// A walk that starts at `cursor` (None: from the beginning).
    pub fn from(cursor: Option<String>) -> CompletionPages {
        CompletionPages { cursor, more: true }
    }

    /// The cursor to fetch the next page with.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether another page is to be fetched.
    pub fn more(&self) -> bool {
        self.more
    }

    /// Take in what a fetched page said about the position.
    pub fn advance(&mut self, next_cursor: Option<String>, more: bool) {
        if next_cursor.is_some() {
            self.cursor = next_cursor;
        }
        self.more = more;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_without_a_cursor_keeps_the_last_one_and_more_false_ends() {
        let mut pages = CompletionPages::from(None);
        assert!(pages.more());
        pages.advance(Some("p2".into()), true);
        assert_eq!(pages.cursor(), Some("p2"));
        pages.advance(None, true);
        assert_eq!((pages.cursor(), pages.more()), (Some("p2"), true));
        pages.advance(Some("p3".into()), false);
        assert_eq!((pages.cursor(), pages.more()), (Some("p3"), false));
    }
}
