//! The settings-header parser over arbitrary bytes. Whatever it accepts must select the
//! algorithm a signature is then verified with.
#![no_main]

mod common;

use common::{FORM, TOKEN};
use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_twilio::{
    __private::signature_settings_header,
    Secret,
    signature::{SettingsError, SignatureSettings, sign},
    verify::{VerifyError, WebhookRequest},
};

const URL: &str = "https://example.com/twilio/sms";
const BODY: &[u8] = b"AccountSid=AC0123456789abcdef0123456789abcdef&Body=Hi";

fuzz_target!(|data: &[u8]| {
    let parsed = SignatureSettings::parse(data);
    if std::str::from_utf8(data).is_err() {
        assert_eq!(parsed, Err(SettingsError::NotUtf8));
    }
    let request = WebhookRequest::new(&Method::POST, URL, BODY)
        .content_type(FORM)
        .signature_settings(data);
    let through_request = signature_settings_header(&request);
    match parsed {
        Ok(settings) => {
            assert_eq!(through_request, Ok(Some(settings)));
            if let Some(key) = settings.key_id() {
                assert!(!key.is_empty() && key == key.trim(), "{key:?}");
            }
            // The header decides the algorithm: a signature made with it verifies.
            let secret = Secret::new(TOKEN).unwrap();
            let params = tower_twilio::form::Params::parse(BODY);
            let signature = sign(TOKEN, settings.algorithm(), URL, params.iter());
            let verified = request
                .signature(signature.as_bytes())
                .verify([&secret])
                .expect("signed with the header's algorithm");
            assert_eq!(verified.algorithm, settings.algorithm());
        }
        Err(SettingsError::UnsupportedAlgorithm) => {
            assert_eq!(through_request, Err(VerifyError::UnsupportedAlgorithm));
        }
        Err(_) => assert_eq!(through_request, Err(VerifyError::MalformedSettings)),
    }
});
