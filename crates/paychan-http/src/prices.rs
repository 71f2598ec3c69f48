//! What each request costs: a table of routes (a method and a path pattern) with a price per
//! request and per KiB of response body, read from a TOML file, and a default price for the
//! rest.
//!
//! ```toml
//! [[route]]              # the first route that matches is used
//! path = "/health"       # an exact path...
//! per_request_sat = 0    # ...that is free
//!
//! [[route]]
//! method = "GET"         # any method if left out
//! path = "/files/*"      # a prefix, ending in '*'
//! per_request_sat = 1
//! per_kib_sat = 2        # a metered response: paid as it streams
//! ```

use bitcoin::Amount;
use serde::Deserialize;

/// The price of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Paid with the request.
    pub per_request: Amount,
    /// Paid for each KiB of the response body, as it streams (zero: not metered).
    pub per_kib: Amount,
}

impl Price {
    /// Whether the request costs nothing: it is forwarded without a payment.
    pub fn is_free(&self) -> bool {
        self.per_request == Amount::ZERO && self.per_kib == Amount::ZERO
    }
}

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The method, such as `GET`; any if `None`.
    #[serde(default)]
    pub method: Option<String>,
    /// The path: exact, or a prefix if it ends in `*`.
    pub path: String,
    /// The price per request, in satoshis.
    #[serde(default)]
    pub per_request_sat: u64,
    /// The price per KiB of response body, in satoshis.
    #[serde(default)]
    pub per_kib_sat: u64,
}

impl Route {
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        method_ok && path_ok
    }

    fn price(&self) -> Price {
        Price {
            per_request: Amount::from_sat(self.per_request_sat),
            per_kib: Amount::from_sat(self.per_kib_sat),
        }
    }
}

/// Errors reading a price table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    /// The file could not be read.
    #[error("cannot read the price file: {0}")]
    Read(#[from] std::io::Error),
    /// It is not a valid table.
    #[error("malformed price file: {0}")]
    Malformed(String),
}

/// The routes, in order, and the price of requests none matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    routes: Vec<Route>,
    /// The price of a request no route matches; `None`: such a request is not forwarded.
    pub default: Option<Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    route: Vec<Route>,
}

impl PriceTable {
    /// A table with no routes: every request costs `default`.
    pub fn flat(default: Price) -> PriceTable {
        PriceTable { routes: Vec::new(), default: Some(default) }
    }

    /// Parses the TOML text of a price file, with `default` for requests no route matches.
    ///
    /// # Errors
    /// [`PriceError::Malformed`].
    pub fn parse(toml_text: &str, default: Option<Price>) -> Result<PriceTable, PriceError> {
        let file: PriceFile =
            toml::from_str(toml_text).map_err(|e| PriceError::Malformed(e.to_string()))?;
        for r in &file.route {
            if !r.path.starts_with('/') {
                let why = format!("route path {:?} does not start with '/'", r.path);
                return Err(PriceError::Malformed(why));
            }
            if r.path[..r.path.len() - 1].contains('*') {
                let why = format!("route path {:?}: '*' only at the end", r.path);
                return Err(PriceError::Malformed(why));
            }
        }
        Ok(PriceTable { routes: file.route, default })
    }

    /// Reads a price file.
    ///
    /// # Errors
    /// [`PriceError`].
    pub fn read(path: &std::path::Path, default: Option<Price>) -> Result<PriceTable, PriceError> {
        PriceTable::parse(&std::fs::read_to_string(path)?, default)
    }

    /// The price of `method` on `path`, or `None` if no route matches and there is no default.
    pub fn price(&self, method: &str, path: &str) -> Option<Price> {
        match self.routes.iter().find(|r| r.matches(method, path)) {
            Some(route) => Some(route.price()),
            None => self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[route]]
        path = "/health"

        [[route]]
        method = "GET"
        path = "/files/*"
        per_request_sat = 1
        per_kib_sat = 2
    "#;

    fn sat(per_request: u64, per_kib: u64) -> Price {
        Price { per_request: Amount::from_sat(per_request), per_kib: Amount::from_sat(per_kib) }
    }

    #[test]
    fn the_first_matching_route_sets_the_price() {
        let table = PriceTable::parse(FILE, Some(sat(5, 0))).unwrap();
        assert!(table.price("GET", "/health").unwrap().is_free());
        assert_eq!(table.price("GET", "/files/a.bin"), Some(sat(1, 2)));
        assert_eq!(table.price("POST", "/files/a.bin"), Some(sat(5, 0)));
        assert_eq!(table.price("GET", "/healthz"), Some(sat(5, 0)));
        let strict = PriceTable::parse(FILE, None).unwrap();
        assert_eq!(strict.price("GET", "/other"), None);
    }

    #[test]
    fn a_bad_file_is_refused() {
        for bad in [
            "[[route]]\npath = \"nope\"",
            "[[route]]\npath = \"/a*b\"",
            "[[route]]\npath = \"/a\"\nprice = 3",
            "[[route]]\nper_request_sat = 1",
        ] {
            assert!(matches!(PriceTable::parse(bad, None), Err(PriceError::Malformed(_))), "{bad}");
        }
    }
}
