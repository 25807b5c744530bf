//! Token checks against tokens made by boto3 and by pgvalet's own signer.

use std::time::{Duration, UNIX_EPOCH};

use super::*;

/// Made by boto3 1.44 `generate_db_auth_token("db.example.com", 6432, "orders_app")` with the
/// key `AKIDEXAMPLE` / `secret` in us-east-1 at 2026-12-02T01:35:42Z.
const BOTO: &str = "db.example.com:6432/?Action=connect&DBUser=orders_app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261202%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261202T013542Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=90b8c6ce9470cda75b9a995a7f7fa90ae9880442f5d511b636da9d68688f5f6b";

fn signed_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_175_342)
}

fn verifier(mode: IamVerify) -> Verifier {
    Verifier {
        host: "db.example.com".into(),
        port: 6432,
        region: "us-east-1".into(),
        mode,
        clock_skew: Duration::from_secs(300),
        keys: vec![Key {
            access_key_id: "AKIDEXAMPLE".into(),
            secret: Secret::new("secret".into()),
        }],
    }
}

#[test]
fn a_boto3_token_is_accepted_within_its_time() {
    let v = verifier(IamVerify::Signature);
    for after in [0, 60, 899, 900 + 299] {
        let now = signed_at() + Duration::from_secs(after);
        let checked = v.check(BOTO, "orders_app", now).unwrap();
        assert!(checked.signature_checked, "{after}");
    }
    // A clock a little behind the signer's is allowed for.
    v.check(BOTO, "orders_app", signed_at() - Duration::from_secs(200))
        .unwrap();
}

#[test]
fn pgvalet_makes_tokens_boto3_would() {
    let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
    let made = make_token(
        &credentials,
        "us-east-1",
        "db.example.com",
        6432,
        "orders_app",
        signed_at(),
    )
    .unwrap();
    assert_eq!(made, BOTO);
}

#[test]
fn each_refusal_says_why() {
    let v = verifier(IamVerify::Signature);
    let now = signed_at() + Duration::from_secs(10);
    let kind = |token: &str, user: &str, now| v.check(token, user, now).unwrap_err().kind();
    assert_eq!(
        kind(BOTO, "orders_app", signed_at() + Duration::from_secs(1201)),
        "iam_expired"
    );
    assert_eq!(
        kind(BOTO, "orders_app", signed_at() - Duration::from_secs(301)),
        "iam_expired",
        "from the future"
    );
    assert_eq!(kind(BOTO, "someone_else", now), "iam_wrong_user");
    let other_host = BOTO.replace("db.example.com:6432", "db.example.com:5432");
    assert_eq!(kind(&other_host, "orders_app", now), "iam_wrong_host");
    let other_region = BOTO.replace("us-east-1", "eu-west-1");
    assert_eq!(kind(&other_region, "orders_app", now), "iam_wrong_scope");
    let other_key = BOTO.replace("AKIDEXAMPLE", "AKIDOTHER");
    assert_eq!(kind(&other_key, "orders_app", now), "iam_unknown_key");
    // One character of the signature changed.
    let last = BOTO.len() - 1;
    let flipped = format!(
        "{}{}",
        &BOTO[..last],
        if BOTO.ends_with('b') { 'c' } else { 'b' }
    );
    assert_eq!(kind(&flipped, "orders_app", now), "iam_bad_signature");
    // A claim the signature covers, changed: the user.
    let other_user = BOTO.replace("DBUser=orders_app", "DBUser=orders_apq");
    assert_eq!(kind(&other_user, "orders_apq", now), "iam_bad_signature");
    assert_eq!(kind("hunter2", "orders_app", now), "iam_malformed");
    // Found by fuzzing: a token whose X-Amz-SignedHeaders was changed passed, since the
    // signature is computed for the host header alone whatever the token claims.
    let other_headers = BOTO.replace("SignedHeaders=host", "SignedHeaders=xost");
    assert_eq!(kind(&other_headers, "orders_app", now), "iam_malformed");
    let message = v.check(BOTO, "orders_app", signed_at() + Duration::from_secs(1201));
    assert!(
        message.unwrap_err().to_string().contains("expired"),
        "the message names the cause"
    );
}

#[test]
fn claims_mode_checks_everything_but_the_signature() {
    let v = verifier(IamVerify::Claims);
    let now = signed_at() + Duration::from_secs(10);
    let other_key = BOTO.replace("AKIDEXAMPLE", "AKIDOTHER");
    let checked = v.check(&other_key, "orders_app", now).unwrap();
    assert!(!checked.signature_checked);
    assert!(v.check(BOTO, "someone_else", now).is_err());
    assert!(
        v.check(BOTO, "orders_app", now + Duration::from_secs(1500))
            .is_err()
    );
}
