//! Builds and signs webhook requests exactly as Twilio sends them.
//!
//! The one place that knows what Twilio's requests look like: the signing tool
//! (`send_webhook`) uses it to send them, the load test to load the server, the inspector page
//! to send its test webhooks, and the server's tests to drive the server. It only builds data
//! (method, URL, headers, body); sending is the caller's business. Signing goes through
//! tower-twilio's own [`signature::sign`], never a copy of it.

use tower_twilio::signature::{
    self, Algorithm, IDEMPOTENCY_TOKEN_HEADER, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER,
};

/// Every `MessageStatus` value Twilio documents, in the order a message usually goes through
/// them (the last few are special cases). Servers must keep unknown values as they are.
pub const MESSAGE_STATUSES: &[&str] = &[
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "receiving",
    "received",
    "accepted",
    "scheduled",
    "canceled",
    "partially_delivered",
];

/// Every `CallStatus` Twilio documents for call status callbacks.
pub const CALL_STATUSES: &[&str] = &[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "canceled",
    "failed",
];

/// Every `RecordingStatus` Twilio documents for recording status callbacks.
pub const RECORDING_STATUSES: &[&str] = &["in-progress", "completed", "absent", "failed"];

/// The `AccountSid` used when none is given: the right shape, but no real account.
pub const EXAMPLE_ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// A kind of webhook with realistic parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    /// An incoming SMS ("A message comes in").
    Sms,
    /// A message status callback with this `MessageStatus`.
    Status(String),
    /// An incoming call ("A call comes in").
    Voice,
    /// A call status callback with this `CallStatus` (a call's `StatusCallback`).
    CallStatus(String),
    /// A recording status callback with this `RecordingStatus` (`recordingStatusCallback`).
    Recording(String),
}

impl Preset {
    /// The path the example server serves this webhook on.
    pub fn path(&self) -> &'static str {
        match self {
            Self::Sms => "/twilio/sms",
            Self::Status(_) | Self::CallStatus(_) | Self::Recording(_) => "/twilio/status",
            Self::Voice => "/twilio/voice",
        }
    }

    /// The parameters Twilio sends for this webhook, in Twilio's order, with fresh random SIDs.
    pub fn params(&self, account_sid: &str) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            Self::Sms => {
                let sid = random_sid("SM");
                vec![
                    ("ToCountry", "US".into()),
                    ("ToState", "CA".into()),
                    ("SmsMessageSid", sid.clone()),
                    ("NumMedia", "0".into()),
                    ("ToCity", String::new()),
                    ("FromZip", "94105".into()),
                    ("SmsSid", sid.clone()),
                    ("FromState", "CA".into()),
                    ("SmsStatus", "received".into()),
                    ("FromCity", "SAN FRANCISCO".into()),
                    ("Body", "Hello \u{1f44b} from send_webhook".into()),
                    ("FromCountry", "US".into()),
                    ("To", "+14155550199".into()),
                    ("ToZip", String::new()),
                    ("NumSegments", "1".into()),
                    ("MessageSid", sid),
                    ("AccountSid", account_sid.into()),
                    ("From", "+14155550100".into()),
                    ("ApiVersion", "2010-04-01".into()),
                ]
            }
            Self::Status(status) => {
                let sid = random_sid("SM");
                let mut pairs = vec![
                    ("SmsSid", sid.clone()),
                    ("SmsStatus", status.clone()),
                    ("MessageStatus", status.clone()),
                    ("To", "+14155550100".into()),
                    ("MessageSid", sid),
                    ("AccountSid", account_sid.into()),
                    ("From", "+14155550199".into()),
                    ("ApiVersion", "2010-04-01".into()),
                ];
                // Twilio adds an ErrorCode when a message could not be delivered.
                match status.as_str() {
                    "undelivered" => pairs.push(("ErrorCode", "30003".into())),
                    "failed" => pairs.push(("ErrorCode", "30008".into())),
                    _ => {}
                }
                pairs
            }
            Self::Voice => vec![
                ("Called", "+14155550199".into()),
                ("ToState", "CA".into()),
                ("CallerCountry", "US".into()),
                ("Direction", "inbound".into()),
                ("CallerState", "CA".into()),
                ("ToZip", String::new()),
                ("CallSid", random_sid("CA")),
                ("To", "+14155550199".into()),
                ("CallerZip", "94105".into()),
                ("ToCountry", "US".into()),
                ("StirVerstat", "TN-Validation-Passed-A".into()),
                ("CallToken", String::new()),
                ("CalledZip", String::new()),
                ("ApiVersion", "2010-04-01".into()),
                ("CalledCity", String::new()),
                ("CallStatus", "ringing".into()),
                ("From", "+14155550100".into()),
                ("AccountSid", account_sid.into()),
                ("CalledCountry", "US".into()),
                ("CallerCity", "SAN FRANCISCO".into()),
                ("ToCity", String::new()),
                ("FromCountry", "US".into()),
                ("Caller", "+14155550100".into()),
                ("FromCity", "SAN FRANCISCO".into()),
                ("CalledState", "CA".into()),
                ("FromZip", "94105".into()),
                ("FromState", "CA".into()),
            ],
            Self::CallStatus(status) => {
                let mut pairs = vec![
                    ("Called", "+14155550199".into()),
                    ("ToState", "CA".into()),
                    ("CallerCountry", "US".into()),
                    ("Direction", "inbound".into()),
                    ("Timestamp", "Sat, 28 Nov 2026 12:00:00 +0000".into()),
                    ("CallbackSource", "call-progress-events".into()),
                    ("SequenceNumber", "0".into()),
                    ("CallSid", random_sid("CA")),
                    ("To", "+14155550199".into()),
                    ("ToCountry", "US".into()),
                    ("ApiVersion", "2010-04-01".into()),
                    ("CallStatus", status.clone()),
                    ("From", "+14155550100".into()),
                    ("AccountSid", account_sid.into()),
                    ("Caller", "+14155550100".into()),
                ];
                // Twilio adds the duration once the call has ended.
                if status == "completed" {
                    pairs.push(("CallDuration", "42".into()));
                    pairs.push(("Duration", "1".into()));
                }
                pairs
            }
            Self::Recording(status) => {
                let call_sid = random_sid("CA");
                let recording_sid = random_sid("RE");
                let mut pairs = vec![
                    ("AccountSid", account_sid.into()),
                    ("CallSid", call_sid),
                    (
                        "RecordingUrl",
                        format!(
                            "https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}"
                        ),
                    ),
                    ("RecordingSid", recording_sid),
                    ("RecordingStatus", status.clone()),
                    ("RecordingChannels", "1".into()),
                    ("RecordingSource", "RecordVerb".into()),
                    (
                        "RecordingStartTime",
                        "Sat, 28 Nov 2026 12:00:00 +0000".into(),
                    ),
                ];
                if status == "completed" {
                    pairs.push(("RecordingDuration", "41".into()));
                }
                if status == "failed" {
                    pairs.push(("ErrorCode", "13617".into()));
                }
                pairs
            }
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// Parses a `Key=Value` override (the value may be empty or contain `=`).
pub fn parse_override(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected Key=Value, got {text:?}")),
    }
}

/// Sets each `key` to `value`: replaces every existing value of that key (keeping its place),
/// or appends the pair when the key is new. `SmsSid` and `SmsMessageSid` follow `MessageSid`,
/// and `SmsStatus` follows `MessageStatus`, as they do in Twilio's requests, unless they are
/// overridden themselves.
pub fn apply_overrides(params: &mut Vec<(String, String)>, overrides: &[(String, String)]) {
    let overridden = |name: &str| overrides.iter().any(|(k, _)| k == name);
    let mut expanded: Vec<(String, String)> = Vec::new();
    for (key, value) in overrides {
        expanded.push((key.clone(), value.clone()));
        let followers: &[&str] = match key.as_str() {
            "MessageSid" => &["SmsSid", "SmsMessageSid"],
            "MessageStatus" => &["SmsStatus"],
            _ => &[],
        };
        for follower in followers {
            if !overridden(follower) && params.iter().any(|(k, _)| k == follower) {
                expanded.push(((*follower).to_owned(), value.clone()));
            }
        }
    }
    for (key, value) in expanded {
        let mut found = false;
        params.retain_mut(|(k, v)| {
            if *k != key {
                return true;
            }
            if found {
                return false; // drop repeats: the override replaces them all
            }
            found = true;
            v.clone_from(&value);
            true
        });
        if !found {
            params.push((key, value));
        }
    }
}

/// How the parameters travel.
#[derive(Clone, Debug)]
pub enum Body {
    /// `POST`, `application/x-www-form-urlencoded`: signed over the URL and the parameters.
    Form(Vec<(String, String)>),
    /// `GET` with the parameters in the query: signed over the URL alone.
    Query(Vec<(String, String)>),
    /// `POST` with this body as it is (e.g. JSON): Twilio appends `bodySHA256=<hex>` to the URL
    /// and signs the URL alone.
    Raw {
        /// The `Content-Type`.
        content_type: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// Which secret signs: the account's auth token, or a SharedKey.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// An auth token (always HMAC-SHA1).
    AuthToken(&'a [u8]),
    /// A SharedKey secret with its id and algorithm; adds the settings header.
    SharedKey {
        /// The SharedKey secret.
        secret: &'a [u8],
        /// The SharedKey id (the header's `key=`).
        key_id: &'a str,
        /// The algorithm (the header's `algorithm=`).
        algorithm: Algorithm,
    },
}

/// A request as Twilio would send it, ready to be sent.
#[derive(Clone)]
pub struct SignedRequest {
    /// `POST` or `GET`.
    pub method: &'static str,
    /// The full public URL requested (query included): what was signed.
    pub url: String,
    /// The headers, signature included.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `GET`).
    pub body: Vec<u8>,
    /// What the signature is the HMAC of: the URL, then the sorted parameters (see
    /// `tower_twilio::signature::string_to_sign`). Holds no secret.
    pub string_to_sign: String,
    /// The algorithm the signature was made with.
    pub algorithm: Algorithm,
}

// The signature is derived from the secret: keep it out of debug output anyway.
impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl SignedRequest {
    /// The value of header `name` (case-insensitive), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path and query of [`url`](Self::url), for the request line.
    pub fn path_and_query(&self) -> &str {
        let after_scheme = self
            .url
            .split_once("://")
            .map_or(&*self.url, |(_, rest)| rest);
        after_scheme
            .find(['/', '?'])
            .map_or("/", |at| &after_scheme[at..])
    }
}

/// Signs `body` for the public `url` as Twilio does and adds Twilio's headers.
pub fn sign_request(url: &str, body: Body, signer: Signer<'_>) -> SignedRequest {
    let (secret, algorithm) = match signer {
        Signer::AuthToken(token) => (token, Algorithm::HmacSha1),
        Signer::SharedKey {
            secret, algorithm, ..
        } => (secret, algorithm),
    };
    let no_params: [(&str, &str); 0] = [];
    let (method, url, content_type, bytes, signature, string_to_sign) = match body {
        Body::Form(params) => {
            let encoded = encode(&params);
            let signature = signature::sign(secret, algorithm, url, params_ref(&params));
            let string_to_sign = signature::string_to_sign(url, params_ref(&params));
            let content_type = Some("application/x-www-form-urlencoded".to_owned());
            (
                "POST",
                url.to_owned(),
                content_type,
                encoded.into_bytes(),
                signature,
                string_to_sign,
            )
        }
        Body::Query(params) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            let url = if params.is_empty() {
                url.to_owned()
            } else {
                format!("{url}{separator}{}", encode(&params))
            };
            let signature = signature::sign(secret, algorithm, &url, no_params);
            let string_to_sign = url.clone();
            ("GET", url, None, Vec::new(), signature, string_to_sign)
        }
        Body::Raw {
            content_type,
            bytes,
        } => {
            let url = signature::url_with_body_sha256(url, &bytes);
            let signature = signature::sign(secret, algorithm, &url, no_params);
            let string_to_sign = url.clone();
            (
                "POST",
                url,
                Some(content_type),
                bytes,
                signature,
                string_to_sign,
            )
        }
    };
    let mut headers = vec![
        (SIGNATURE_HEADER.to_owned(), signature),
        (
            IDEMPOTENCY_TOKEN_HEADER.to_owned(),
            format!("{}-{}", random_hex(16), random_hex(16)),
        ),
        ("user-agent".to_owned(), "TwilioProxy/1.1".to_owned()),
        ("accept".to_owned(), "*/*".to_owned()),
        ("x-home-region".to_owned(), "us1".to_owned()),
    ];
    if let Some(content_type) = content_type {
        headers.push(("content-type".to_owned(), content_type));
    }
    if let Signer::SharedKey {
        key_id, algorithm, ..
    } = signer
    {
        headers.push((
            SIGNATURE_SETTINGS_HEADER.to_owned(),
            format!("key={key_id},algorithm={}", algorithm.as_str()),
        ));
    }
    SignedRequest {
        method,
        url,
        headers,
        body: bytes,
        string_to_sign,
        algorithm,
    }
}

fn params_ref(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `application/x-www-form-urlencoded`, as Twilio encodes its bodies and queries.
pub fn encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// A SID of the right shape: `prefix` and 32 random lower-case hex digits.
pub fn random_sid(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(16))
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0; bytes];
    getrandom::fill(&mut buffer).expect("the operating system's random number generator failed");
    hex::encode(buffer)
}
