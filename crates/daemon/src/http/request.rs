//! What a route sees and returns.

use std::sync::Arc;

/// A request: method, path and decoded query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Path without the query string, as sent (not percent-decoded: every
    /// route is plain ASCII).
    pub path: String,
    /// Query parameters in order (repeated keys kept), decoded as
    /// `application/x-www-form-urlencoded` (invalid UTF-8 is replaced).
    pub query: Vec<(String, String)>,
    /// The `Accept` header, when sent (`/metrics` picks OpenMetrics or
    /// Prometheus text by it).
    pub accept: Option<String>,
}

impl Request {
    /// A request for `target` (`/path?query`).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            accept: None,
        }
    }

    /// The same request with an `Accept` header.
    pub fn with_accept(mut self, accept: Option<&str>) -> Request {
        self.accept = accept.map(str::to_string);
        self
    }

    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, with comma-separated values split.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// A JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// A JSON error `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(
            status,
            &ErrorBody {
                error: message.into(),
            },
        )
    }
}

/// The body of an error answer, and of a part of an answer that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What failed, in words.
    pub error: String,
}

/// Maps requests to responses.
pub type Router = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let r = Request::new(
            "GET",
            "/api/events?kind=alert,diagnosis&since=10m&x=a%20b+c",
        );
        assert_eq!(r.path, "/api/events");
        assert_eq!(r.params("kind"), vec!["alert", "diagnosis"]);
        assert_eq!(r.param("since"), Some("10m"));
        assert_eq!(r.param("x"), Some("a b c"));
        // The request that panicked the hand-written decoder: a percent
        // escape cut short before a multi-byte character.
        let r = Request::new("GET", "/%a\u{e9}?k=%a\u{e9}&%=%%");
        assert_eq!(r.path, "/%a\u{e9}");
        assert_eq!(r.param("k"), Some("%a\u{e9}"));
        assert_eq!(Request::new("GET", "/x?100%").param("100%"), Some(""));
    }
}
