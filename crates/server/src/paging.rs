//! Paged reads of the data API: `n` and an opaque `cursor`, checked and named when bad.

use crate::error::ApiError;
use serde::Deserialize;

/// Rows per page when `n` is absent.
pub const DEFAULT_PAGE: usize = 100;
/// Most rows one page returns.
pub const MAX_PAGE: usize = 1000;

/// `?n=&cursor=` of a paged listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Rows per page (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub n: Option<usize>,
    /// Where the page starts: the `next_cursor` of the previous page (absent: the first).
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page size and the position the cursor names. A cursor is tagged with the
    /// listing that issued it, so one listing's cursor is refused by another.
    pub fn resolve(&self, tag: char) -> Result<(usize, u64), ApiError> {
        let n = self.n.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&n) {
            return Err(ApiError::bad_request(
                "invalid_value",
                "n",
                format!("must be within 1..={MAX_PAGE}"),
            ));
        }
        let from = match self.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => decode(tag, c).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_value",
                    "cursor",
                    "not a cursor this listing issued (pass `next_cursor` back as given)",
                )
            })?,
        };
        Ok((n, from))
    }
}

/// The cursor of position `at` in the listing tagged `tag`.
pub fn encode(tag: char, at: u64) -> String {
    format!("{tag}{at:x}")
}

fn decode(tag: char, c: &str) -> Option<u64> {
    let hex = c.strip_prefix(tag)?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let p = |n: Option<usize>, c: &str| PageParams {
            n,
            cursor: Some(c.to_string()),
        };
        assert_eq!(
            p(Some(5), &encode('i', 4242)).resolve('i').ok(),
            Some((5, 4242))
        );
        assert_eq!(p(None, "").resolve('i').ok(), Some((DEFAULT_PAGE, 0)));
        for bad in ["u10", "i", "izz", "i11111111111111111", "10"] {
            let e = p(None, bad).resolve('i').expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("cursor"), "{bad}");
        }
        for n in [0, MAX_PAGE + 1] {
            let e = p(Some(n), "").resolve('i').expect_err("n");
            assert_eq!(e.field.as_deref(), Some("n"));
        }
    }
}
