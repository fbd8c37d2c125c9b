//! Redaction: URLs as events, logs and Sentry may show them, without userinfo and without the
//! values of their query.

use std::borrow::Cow;

use super::parts::{join, split};

/// `url` with any `user:password@` replaced by `[redacted]@`, for logs and events.
pub(crate) fn redact_userinfo(url: &str) -> Cow<'_, str> {
    // Userinfo ends with `@`: most URLs have none, and need no split.
    if !url.contains('@') {
        return Cow::Borrowed(url);
    }
    match split(url) {
        Some(parts) if !parts.userinfo.is_empty() => Cow::Owned(join(&[
            parts.scheme,
            "://[redacted]@",
            parts.host,
            parts.port,
            parts.rest,
        ])),
        _ => Cow::Borrowed(url),
    }
}

/// What stands for a redacted query value.
const REDACTED_VALUE: &str = "[redacted]";

/// `query` (without its `?`) with every value replaced by `[redacted]` and every name kept:
/// `From=%2B1415…&Body=Hi` becomes `From=[redacted]&Body=[redacted]`. A piece without `=`
/// could be a value of its own and is redacted whole; an empty value stays empty.
pub(crate) fn redact_query(query: &str) -> Cow<'_, str> {
    redact_query_within(query, usize::MAX)
}

/// [`redact_query`], built only until it is longer than `max` bytes: what it gives starts
/// with the whole redacted query's first `max + 1` bytes (or is all of it), for a text that
/// keeps at most `max` (see `events::bounded`). A query of one-byte pieces (`a&a&…`) redacts
/// to five times its length, which is never built whole for a few kilobytes of it.
pub(crate) fn redact_query_within(query: &str, max: usize) -> Cow<'_, str> {
    // Kept as it is: nothing, or a name with an empty value (its only `=` is its last byte; a
    // value may itself end in `=`, as base64 does).
    let keeps = |piece: &str| piece.is_empty() || piece.find('=') == Some(piece.len() - 1);
    if query.split('&').all(keeps) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len().min(max.saturating_add(1)));
    for (i, piece) in query.split('&').enumerate() {
        if out.len() > max {
            break;
        }
        if i > 0 {
            out.push('&');
        }
        match piece.split_once('=') {
            _ if keeps(piece) => out.push_str(piece),
            Some((name, _)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED_VALUE);
            }
            None => out.push_str(REDACTED_VALUE),
        }
    }
    Cow::Owned(out)
}

/// `url` as events, logs and Sentry may show it: without `user:password@` (see
/// [`redact_userinfo`]) and with the values of its query redacted (see [`redact_query`]); a
/// fragment, which no request target has, is redacted whole.
pub(crate) fn redact_url(url: &str) -> Cow<'_, str> {
    redact_url_within(url, usize::MAX)
}

/// [`redact_url`], built only until it is longer than `max` bytes (as
/// [`redact_query_within`]): for a text that keeps at most `max` of it.
pub(crate) fn redact_url_within(url: &str, max: usize) -> Cow<'_, str> {
    let without_userinfo = redact_userinfo(url);
    let Some(start) = without_userinfo.find(['?', '#']) else {
        return without_userinfo;
    };
    let (head, tail) = without_userinfo.split_at(start);
    let (query, fragment) = match tail.strip_prefix('?') {
        Some(rest) => match rest.split_once('#') {
            Some((query, _)) => (Some(query), true),
            None => (Some(rest), false),
        },
        None => (None, true),
    };
    let query = query.map(|query| redact_query_within(query, max.saturating_sub(head.len())));
    if !fragment && matches!(query, Some(Cow::Borrowed(_))) {
        return without_userinfo;
    }
    let mut out = String::with_capacity(url.len().min(max.saturating_add(1)));
    out.push_str(head);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&query);
    }
    if fragment {
        out.push('#');
        out.push_str(REDACTED_VALUE);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_query_names_only() {
        for (url, shown) in [
            ("https://a.example/sms", "https://a.example/sms"),
            ("https://a.example/sms?", "https://a.example/sms?"),
            (
                "https://u:p@a.example/sms?From=%2B14155550100&Body=Hi&Empty=&&flag",
                "https://[redacted]@a.example/sms?From=[redacted]&Body=[redacted]&Empty=&&[redacted]",
            ),
            (
                "https://a.example/sms?a=b=c",
                "https://a.example/sms?a=[redacted]",
            ),
            // Values that end in `=` (base64, a one-time code) are values all the same.
            (
                "https://a.example/sms?From=%2B15551234567&Body=my-secret-code=&Digits=1234==",
                "https://a.example/sms?From=[redacted]&Body=[redacted]&Digits=[redacted]",
            ),
            (
                "https://a.example/sms?==",
                "https://a.example/sms?=[redacted]",
            ),
            (
                "https://a.example/sms?x=1#frag",
                "https://a.example/sms?x=[redacted]#[redacted]",
            ),
            (
                "https://a.example/sms#frag",
                "https://a.example/sms#[redacted]",
            ),
            ("/sms?x=1", "/sms?x=[redacted]"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert!(matches!(
            redact_url("https://a.example/sms?only=&names="),
            Cow::Borrowed(_)
        ));
    }
}
