//! The crate's WHATWG URL serialiser (twilio-node's `new URL(url).toString()`, one of the
//! lenient URL spellings) against the `url` crate's, over generated `http`/`https` URLs with
//! hostile characters in every component: whenever ours gives a form, it is `url`'s; when it
//! refuses, either `url` refuses too or the URL is one of the documented out-of-scope ones
//! (another scheme, a host that needs international domain name processing).

use percent_encoding::percent_decode_str;
use proptest::{prelude::*, test_runner::Config};
use tower_twilio::__private::{Unserializable, binds_same_request, whatwg_form};

/// 512 cases, or `PROPTEST_CASES` for a longer run. The comparison is cheap; more cases
/// reach more corners of the parser.
fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The text `url` parses `input` into, or `None` when it refuses it.
fn url_crate_form(input: &str) -> Option<String> {
    url::Url::parse(input).ok().map(String::from)
}

/// The host as the WHATWG parser delimits it, percent-decoded and lower-cased: after the
/// scheme's `:` and any `/` or `\`, up to the end of the authority, after its last `@`, up to
/// a `:` outside brackets. Lossy for bytes that are not UTF-8.
fn host_of(input: &str) -> Option<String> {
    let input: String = input
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let rest = input.split_once(':')?.1.trim_start_matches(['/', '\\']);
    let authority = rest.split(['/', '\\', '?', '#']).next()?;
    let host_and_port = authority.rsplit('@').next()?;
    let mut depth = false;
    let host: String = host_and_port
        .chars()
        .take_while(|&c| {
            match c {
                '[' => depth = true,
                ']' => depth = false,
                ':' if !depth => return false,
                _ => {}
            }
            true
        })
        .collect();
    Some(
        percent_decode_str(&host)
            .decode_utf8_lossy()
            .to_ascii_lowercase(),
    )
}

/// Whether a path segment (any component, to keep it simple) is a Windows drive letter (`c:`,
/// `c|`) and a later one a double-dot segment.
fn drive_letter_then_dots(input: &str) -> bool {
    let input = input
        .trim_matches(|c: char| c <= ' ')
        .replace(['\t', '\n', '\r'], "");
    let mut drive_letter = false;
    for segment in input.split(['/', '\\', '?', '#']) {
        let bytes = segment.as_bytes();
        if bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && matches!(bytes[1], b':' | b'|') {
            drive_letter = true;
        }
        let lower = segment.to_ascii_lowercase();
        if drive_letter && matches!(lower.as_str(), ".." | ".%2e" | "%2e." | "%2e%2e") {
            return true;
        }
    }
    false
}

/// Checks one input against the `url` crate: equal forms, or a refusal that is `url`'s too or
/// documented as out of scope.
fn compare(input: &str) -> Result<(), TestCaseError> {
    let theirs = url_crate_form(input);
    match whatwg_form(input) {
        // The one place `url` departs from the Standard (and from Node): it never removes a
        // segment like `c:` or `c|` with `..`, a rule the Standard keeps for `file:` URLs.
        // Ours follows the Standard; a received path with `..` has no lenient form anyway.
        Ok(ours) if theirs.as_ref() != Some(&ours) && drive_letter_then_dots(input) => {
            prop_assert!(theirs.is_some(), "input {:?}", input);
            prop_assert!(!binds_same_request(input, &ours), "input {:?}", input);
        }
        Ok(ours) => prop_assert_eq!(Some(ours), theirs, "input {:?}", input),
        Err(Unserializable::Invalid) => {
            prop_assert_eq!(theirs, None, "refused as invalid: {:?}", input);
        }
        Err(Unserializable::Scheme) => {
            let scheme = input
                .trim_matches(|c: char| c <= ' ')
                .split(':')
                .next()
                .unwrap_or_default()
                .replace(['\t', '\n', '\r'], "")
                .to_ascii_lowercase();
            prop_assert!(
                scheme != "http" && scheme != "https",
                "out of scope for its scheme: {:?}",
                input
            );
        }
        Err(Unserializable::NonAsciiHost) => {
            let host = host_of(input).unwrap_or_default();
            prop_assert!(
                !host.is_ascii(),
                "out of scope for a non-ASCII host: {:?} (host {:?})",
                input,
                host
            );
        }
        Err(Unserializable::PunycodeLabel) => {
            let host = host_of(input).unwrap_or_default();
            prop_assert!(
                host.split('.').any(|label| label.starts_with("xn--")),
                "out of scope for a punycode label: {:?} (host {:?})",
                input,
                host
            );
        }
        Err(other) => prop_assert!(false, "unknown refusal {:?} for {:?}", other, input),
    }
    Ok(())
}

/// Characters that mean something to a URL parser somewhere, and some that need escaping.
const HOSTILE: &[&str] = &[
    "/", "\\", "?", "#", "@", ":", "[", "]", "%", "%2e", "%2E", "%41", "%zz", "%", "%c3%a9",
    "%e2%82", ".", "..", "'", "\"", "<", ">", "`", "{", "}", "^", "|", " ", "\t", "\n", "\r",
    "\u{0}", "\u{1f}", "\u{7f}", "+", "&", "=", ";", ",", "!", "$", "*", "(", ")", "~", "_", "-",
    "é", "\u{ff21}", "\u{ad}", "😀", "\u{fffd}",
];

/// A string of plain letters, digits and hostile pieces.
fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => "[a-zA-Z0-9]{1,3}",
            2 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        ],
        0..max,
    )
    .prop_map(|pieces| pieces.concat())
}

/// `http` or `https` in any case, now and then another scheme or none.
fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&["http", "https", "HTTP", "HttpS", "hTTp"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["ws", "ftp", "file", "foo", "h+t-t.p", "1http", "ht tp", ""][..])
            .prop_map(str::to_owned),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just("://"),
        1 => prop::sample::select(&[":", ":/", ":///", ":\\\\", ":/\\", "", "//", ":\t//"][..]),
    ]
}

fn ipv4_number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..300).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        (0u32..300).prop_map(|n| format!("0x{n:X}")),
        (0u32..300).prop_map(|n| format!("0{n:o}")),
        Just("0x".to_owned()),
        Just("08".to_owned()),
        Just("4294967296".to_owned()),
        Just("".to_owned()),
    ]
}

fn ipv6_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("0".to_owned()),
        1 => Just("0000".to_owned()),
        3 => (0u16..=0xffff).prop_map(|n| format!("{n:x}")),
        1 => (0u16..=0xffff).prop_map(|n| format!("{n:04X}")),
        1 => Just("12345".to_owned()),
        1 => Just("g".to_owned()),
        1 => Just("".to_owned()),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        // Domains: labels of letters, digits, hyphens and hostile pieces.
        8 => prop::collection::vec(
            prop_oneof![
                12 => "[a-zA-Z0-9-]{1,8}",
                1 => prop::sample::select(&["xn--caf-dma", "XN--"][..]).prop_map(str::to_owned),
                1 => Just("".to_owned()),
                2 => hostile_text(2),
            ],
            1..4,
        )
        .prop_map(|labels| labels.join(".")),
        // IPv4 in its number forms, and domains that end in a number.
        2 => (prop::collection::vec(ipv4_number(), 1..6), any::<bool>(), any::<bool>())
            .prop_map(|(parts, trailing_dot, named)| {
                let mut host = parts.join(".");
                if trailing_dot {
                    host.push('.');
                }
                if named {
                    host = format!("example.{host}");
                }
                host
            }),
        // IPv6 literals: pieces, a `::` somewhere, an embedded IPv4 address.
        2 => (
            prop::collection::vec(ipv6_piece(), 0..9),
            prop::option::of(0usize..9),
            prop::option::of(prop::collection::vec(0u16..300, 3..5)),
            "[a-zA-Z]{0,1}",
        )
            .prop_map(|(pieces, compress, ipv4, junk)| {
                let mut text: Vec<String> = pieces;
                if let Some(at) = compress {
                    let at = at.min(text.len());
                    text.insert(at, String::new());
                    if at == 0 || at == text.len() - 1 {
                        text.insert(at, String::new());
                    }
                }
                if let Some(ipv4) = ipv4 {
                    let dotted: Vec<String> = ipv4.iter().map(u16::to_string).collect();
                    text.push(dotted.join("."));
                }
                format!("[{}{junk}]", text.join(":"))
            }),
        1 => hostile_text(6),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(String::new()),
        1 => Just(":".to_owned()),
        2 => (0u32..70000).prop_map(|p| format!(":{p}")),
        1 => prop::sample::select(&[":80", ":443", ":0080", ":000443", ":65535", ":65536", ":99999999999", ":8a", ":-1", ": 80", ":８0"][..])
            .prop_map(str::to_owned),
    ]
}

prop_compose! {
    fn generated_url()(
        lead in prop::sample::select(&["", "", "", " ", "\t", "\u{0}\u{1}", " \n"][..]),
        scheme in scheme(),
        separator in separator(),
        userinfo in prop::option::of((hostile_text(4), prop::option::of(hostile_text(4)))),
        host in host(),
        port in port(),
        path in prop::collection::vec(
            prop_oneof![
                3 => hostile_text(4),
                1 => prop::sample::select(&[".", "..", "%2e", "%2E%2e", ".%2E", "%2e.", "...", ""][..])
                    .prop_map(str::to_owned),
            ],
            0..6,
        ),
        backslashes in any::<bool>(),
        query in prop::option::of(hostile_text(6)),
        fragment in prop::option::of(hostile_text(4)),
        trail in prop::sample::select(&["", "", "", " ", "\u{0}", "\t\n "][..]),
    ) -> String {
        let mut url = format!("{lead}{scheme}{separator}");
        if let Some((user, password)) = userinfo {
            url.push_str(&user);
            if let Some(password) = password {
                url.push(':');
                url.push_str(&password);
            }
            url.push('@');
        }
        url.push_str(&host);
        url.push_str(&port);
        for segment in path {
            url.push(if backslashes { '\\' } else { '/' });
            url.push_str(&segment);
        }
        if let Some(query) = query {
            url.push('?');
            url.push_str(&query);
        }
        if let Some(fragment) = fragment {
            url.push('#');
            url.push_str(&fragment);
        }
        url.push_str(trail);
        url
    }
}

/// What `PublicUrl::fixed` accepted when it validated with the `url` crate.
fn fixed_accepted_with_the_url_crate(base: &str) -> bool {
    url::Url::parse(base).is_ok_and(|parsed| {
        matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some_and(|host| !host.is_empty())
    }) && !base.contains(['?', '#'])
        && !base.chars().any(|c| c.is_whitespace() || c.is_control())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn whatwg_form_is_the_url_crates(input in generated_url()) {
        compare(&input)?;
    }

    // `PublicUrl::fixed` accepts and refuses what it did with the `url` crate, except that it
    // refuses a non-ASCII host (configure the punycode form) and takes punycode labels as
    // written.
    #[test]
    fn fixed_base_urls_are_judged_as_before(input in generated_url()) {
        let now = tower_twilio::PublicUrl::fixed(&input);
        let before = fixed_accepted_with_the_url_crate(&input);
        match whatwg_form(&input) {
            Err(Unserializable::NonAsciiHost) => {
                let error = now.expect_err("a non-ASCII host is refused").to_string();
                prop_assert!(error.contains("punycode"), "{}", error);
            }
            Err(Unserializable::PunycodeLabel) => {
                prop_assert!(now.is_ok() || !before, "{:?}", input);
            }
            _ => prop_assert_eq!(now.is_ok(), before, "{:?}", input),
        }
    }

    // Arbitrary text after a valid start: whatever follows `http://`, the forms agree.
    #[test]
    fn whatwg_form_is_the_url_crates_for_any_text(
        scheme in prop::sample::select(&["http://", "HTTPS://", "https:"][..]),
        rest in any::<String>(),
    ) {
        compare(&format!("{scheme}{rest}"))?;
    }
}

/// Hand-picked corners, each compared with the `url` crate (the table in the library's own
/// tests spells out the expected forms).
#[test]
fn tricky_inputs_match_the_url_crate() {
    for input in [
        "https://Example.COM/sms?x='",
        "HTTPS://example.com:443/a/../b/./c/%2e%2E/d?q=a b#f g",
        "http://example.com:0080",
        "http://example.com:",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://4294967295/",
        "http://4294967296/",
        "http://1.2.3.4.5/",
        "http://foo.0x/",
        "http://foo.09/",
        "http://[::ffff:1.2.3.4]/",
        "http://[1:0:0:2:0:0:0:3]/",
        "http://[0:0:1:0:0:1:0:0]/",
        "http://[::]/",
        "http://[1::]/",
        "http://[1:2:3:4:5:6:7::]/",
        "http://[::1:2:3:4:5:6:7]/",
        "http://[1:2:3:4:5:6:1.2.3.4]/",
        "http://[1:2:3:4:5:6:7:1.2.3.4]/",
        "http://[::01.2.3.4]/",
        "http://u:p:q@h@example.com/",
        "http://:@example.com/",
        "http://@example.com/",
        "http://@/",
        "http://user:@example.com/",
        "http:example.com\\a\\..\\b",
        "http:\\\\example.com/",
        "http://ex%41mple.com/",
        "http://ex%2Fmple.com/",
        "http://ex%25mple.com/",
        "http://ex ample.com/",
        "http://exa_mple!$&'()*+,;=.com/",
        "http://ex{a}mple\"`.com/",
        "http://xn--caf-dma.com/",
        "http://café.com/",
        "http://caf%C3%A9.com/",
        " \t https://exa\tmple.com/p\nath?q\r#f \u{0}",
        "https://example.com/a\u{7f}b?c\u{7f}d#e\u{0}f",
        "https://example.com/😀?😀#😀",
        "https://example.com/a?b?c#d#e",
        "https://example.com#?x",
        "https://example.com?",
        "https://example.com#",
        "https://example.com/..",
        "https://example.com/../..",
        "https://example.com/a/..",
        "https://example.com/a/../",
        "https://example.com/./",
        "https://example.com/.",
        "https://example.com//a//..//b",
        "https://example.com/...",
        "https://example.com/a|/..",
        "https://example.com/c:/b/../..",
        "https://example.com/a/c:/..\u{4}",
    ] {
        compare(input).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The generator reaches every outcome, a form most often: the comparison above is not
/// vacuous. Deterministic: a fixed seed.
#[test]
fn generated_urls_reach_every_outcome() {
    use proptest::{
        strategy::ValueTree,
        test_runner::{RngAlgorithm, TestRng, TestRunner},
    };

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = generated_url();
    let (mut forms, mut changed, mut invalid, mut scheme, mut non_ascii, mut punycode) =
        (0, 0, 0, 0, 0, 0);
    let total = 4000;
    for _ in 0..total {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        match whatwg_form(&input) {
            Ok(form) => {
                forms += 1;
                if form != input {
                    changed += 1;
                }
            }
            Err(Unserializable::Invalid) => invalid += 1,
            Err(Unserializable::Scheme) => scheme += 1,
            Err(Unserializable::NonAsciiHost) => non_ascii += 1,
            Err(Unserializable::PunycodeLabel) => punycode += 1,
            Err(other) => panic!("unknown refusal {other:?}"),
        }
    }
    println!(
        "whatwg: of {total} generated URLs, {forms} with a form ({changed} changed by it), \
         {invalid} invalid, out of scope: {scheme} scheme, {non_ascii} non-ASCII host, \
         {punycode} punycode label"
    );
    assert!(forms * 3 > total, "{forms} forms of {total}");
    assert!(
        changed * 2 > forms,
        "{changed} of {forms} forms differ from their input"
    );
    for (outcome, count) in [
        ("invalid", invalid),
        ("scheme", scheme),
        ("non-ASCII host", non_ascii),
        ("punycode label", punycode),
    ] {
        assert!(count * 100 > total, "{outcome}: {count} of {total}");
    }
}
