//! What may reach Sentry from a request: `sentry-tower`'s `SentryHttpLayer` copies the request
//! into every event captured while it is handled, and its own filter knows nothing of Twilio's
//! headers: `X-Twilio-Signature` with the URL is a replayable request, and the settings header
//! names the SharedKey. [`before_send`] keeps only the headers on [`KEPT_HEADERS`], drops
//! cookies and the query (a query may hold the admin token; a `GET` webhook's holds its
//! parameters), and is installed as the client's `before_send`.

use sentry::protocol::Event;

/// The request headers an event may carry; every other one is dropped.
pub const KEPT_HEADERS: &[&str] = &[
    "content-length",
    "content-type",
    "host",
    "i-twilio-idempotency-token",
    "user-agent",
    "x-request-id",
];

/// Removes everything but [`KEPT_HEADERS`], the cookies, and the query from the event's
/// request.
pub fn before_send(mut event: Event<'static>) -> Option<Event<'static>> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        request.cookies = None;
        request.query_string = None;
        request.data = None;
        request.env.clear();
        if let Some(url) = request.url.as_mut() {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
        }
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use sentry::protocol::Request;

    use super::*;

    #[test]
    fn only_harmless_request_parts_remain() {
        let mut request = Request {
            url: Some(
                "http://user:pw@127.0.0.1:3000/?token=admin#x"
                    .parse()
                    .unwrap(),
            ),
            query_string: Some("token=admin".to_owned()),
            cookies: Some("twilio_admin=admin".to_owned()),
            ..Request::default()
        };
        for (name, value) in [
            ("X-Twilio-Signature", "sig"),
            (
                "x-twilio-webhooks-signature-settings",
                "key=k,algorithm=HMAC_SHA256",
            ),
            ("Authorization", "Bearer admin"),
            ("Cookie", "twilio_admin=admin"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("user-agent", "TwilioProxy/1.1"),
        ] {
            request.headers.insert(name.to_owned(), value.to_owned());
        }
        let event = Event {
            request: Some(request),
            ..Event::default()
        };
        let event = before_send(event).unwrap();
        let request = event.request.unwrap();
        let names: Vec<&str> = request.headers.keys().map(String::as_str).collect();
        assert_eq!(names, ["Content-Type", "user-agent"]);
        assert_eq!(request.url.unwrap().as_str(), "http://127.0.0.1:3000/");
        assert!(request.query_string.is_none() && request.cookies.is_none());
    }
}
