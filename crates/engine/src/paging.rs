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

/// A run's bounds on one listing (`fetch-employees` or `fetch-completions`):
/// a plugin that repeats a cursor, or returns pages or records without end,
/// stops the run with a fault naming the bound instead of looping or
/// growing the host forever. The bounds are the connector's `limits`.
#[derive(Debug)]
pub struct ListingBounds {
    operation: &'static str,
    connector: String,
    max_pages: u32,
    max_records: u64,
    pages: u32,
    records: u64,
    cursors: std::collections::HashSet<String>,
}

impl ListingBounds {
    /// Bounds for `operation` on `connector` with its limits.
    pub fn new(
        operation: &'static str,
        connector: &str,
        limits: &switchyard_runtime::Limits,
    ) -> ListingBounds {
        ListingBounds {
            operation,
            connector: connector.to_owned(),
            max_pages: limits.max_pages_per_run,
            max_records: limits.max_records_per_run,
            pages: 0,
            records: 0,
            cursors: std::collections::HashSet::new(),
        }
    }

    /// Account for a page of `records` that points to `next_cursor`.
    pub fn take(
        &mut self,
        records: usize,
        next_cursor: Option<&str>,
    ) -> Result<(), switchyard_model::ConnectorError> {
        self.pages += 1;
        self.records += records as u64;
        let broken = if self.pages > self.max_pages {
            Some(format!(
                "{} pages, more than the limit `max_pages_per_run` of {}",
                self.pages, self.max_pages
            ))
        } else if self.records > self.max_records {
            Some(format!(
                "{} records, more than the limit `max_records_per_run` of {}",
                self.records, self.max_records
            ))
        } else if let Some(cursor) = next_cursor
            && !self.cursors.insert(cursor.to_owned())
        {
            let shown: String = cursor.chars().take(60).collect();
            Some(format!(
                "cursor `{shown}` a second time after {} pages: the listing would never end",
                self.pages
            ))
        } else {
            None
        };
        match broken {
            None => Ok(()),
            Some(what) => Err(switchyard_model::ConnectorError::PluginFault(
                switchyard_model::PluginFault {
                    kind: switchyard_model::FaultKind::RunBound,
                    message: format!(
                        "connector `{}`: {} returned {what}",
                        self.connector, self.operation
                    ),
                },
            )),
        }
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn a_repeated_cursor_and_too_many_pages_or_records_are_run_bound_faults() {
        let limits = switchyard_runtime::Limits {
            max_pages_per_run: 3,
            max_records_per_run: 10,
            ..Default::default()
        };
        let fault = |r: Result<(), switchyard_model::ConnectorError>| match r {
            Err(switchyard_model::ConnectorError::PluginFault(f)) => {
                assert_eq!(f.kind, switchyard_model::FaultKind::RunBound);
                f.message
            }
            other => panic!("a run-bound fault, not {other:?}"),
        };
        let mut b = ListingBounds::new("fetch-employees", "hr", &limits);
        b.take(1, Some("a")).unwrap();
        b.take(1, Some("b")).unwrap();
        assert!(fault(b.take(1, Some("a"))).contains("cursor `a` a second time"));

        let mut b = ListingBounds::new("fetch-employees", "hr", &limits);
        for i in 0..3 {
            b.take(1, Some(&i.to_string())).unwrap();
        }
        assert!(fault(b.take(1, Some("x"))).contains("`max_pages_per_run` of 3"));

        let mut b = ListingBounds::new("fetch-completions", "lms", &limits);
        assert!(fault(b.take(11, None)).contains("`max_records_per_run` of 10"));
    }
}

/// Told how many records a listing (named by its operation) has read so
/// far, after each page: what a command's progress bar shows.
pub type Listed<'a> = &'a (dyn Fn(&'static str, u64) + Sync);

/// A [`Listed`] that shows nothing.
pub fn unobserved(_: &'static str, _: u64) {}

/// Walk a listing of `connector` from the start to its last page, bounded
/// like a run's listings ([`ListingBounds`]): `fetch` returns a page's
/// records and the next cursor, `each` takes the records of each page (so
/// a caller can keep only what it needs), `listed` is told the count.
pub async fn walk<T>(
    operation: &'static str,
    connector: &switchyard_runtime::Connector,
    mut fetch: impl AsyncFnMut(
        Option<&str>,
    )
        -> Result<(Vec<T>, Option<String>), switchyard_model::ConnectorError>,
    mut each: impl FnMut(Vec<T>),
    listed: Listed<'_>,
) -> Result<(), switchyard_model::ConnectorError> {
    let mut bounds = ListingBounds::new(operation, &connector.name, connector.limits());
    let mut cursor: Option<String> = None;
    let mut count = 0;
    loop {
        let (records, next) = fetch(cursor.as_deref()).await?;
        bounds.take(records.len(), next.as_deref())?;
        count += records.len() as u64;
        each(records);
        listed(operation, count);
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// Every page of a full `fetch-employees` listing of `hris`, through
/// [`walk`].
pub async fn employee_pages(
    hris: &switchyard_runtime::Connector,
    each: impl FnMut(Vec<switchyard_model::Employee>),
    listed: Listed<'_>,
) -> Result<(), switchyard_model::ConnectorError> {
    walk(
        "fetch-employees",
        hris,
        async |cursor| {
            let page = hris.fetch_employees(cursor).await?;
            Ok((page.employees, page.next_cursor))
        },
        each,
        listed,
    )
    .await
}
