//! Statements renamed, followed, prepared again, answered without a backend, and named in SQL.
use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    message_with(tag, &[body]).to_vec()
}

fn names_in(out: &[u8]) -> Vec<(u8, String)> {
    let mut found = Vec::new();
    let mut rest = out;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let body = &rest[5..1 + len];
        let name = match rest[0] {
            b'P' => cstr(body).unwrap().0.to_owned(),
            b'B' => cstr(cstr(body).unwrap().1).unwrap().0.to_owned(),
            b'D' | b'C' => cstr(&body[1..]).unwrap().0.to_owned(),
            _ => String::new(),
        };
        found.push((rest[0], name));
        rest = &rest[1 + len..];
    }
    found
}

#[test]
fn a_statement_follows_the_client_to_another_backend() {
    let mut s = Statements::default();
    let (mut first, mut second) = (HashSet::new(), HashSet::new());
    let mut expected = Expected::default();
    let mut out = BytesMut::new();
    s.rewrite(
        &msg(b'P', b"s1\0select $1\0\0\0"),
        &mut first,
        &mut expected,
        &mut out,
    )
    .unwrap();
    let server = names_in(&out)[0].1.clone();
    assert!(server.starts_with("pgv") && server != "s1");

    // Bind on a backend that lacks it: the Parse goes first, its ParseComplete is hidden.
    let mut expected = Expected::default();
    let mut out = BytesMut::new();
    s.rewrite(
        &msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
        &mut second,
        &mut expected,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        names_in(&out),
        vec![(b'P', server.clone()), (b'B', server.clone())]
    );
    assert!(
        expected.parse_complete(),
        "the injected Parse's answer is hidden"
    );
    // On that backend now, no second Parse.
    let mut out = BytesMut::new();
    s.rewrite(&msg(b'D', b"Ss1\0"), &mut second, &mut expected, &mut out)
        .unwrap();
    assert_eq!(names_in(&out), vec![(b'D', server.clone())]);
    // Close renames and forgets.
    let mut out = BytesMut::new();
    s.rewrite(&msg(b'C', b"Ss1\0"), &mut second, &mut expected, &mut out)
        .unwrap();
    assert_eq!(names_in(&out), vec![(b'C', server.clone())]);
    assert!(!second.contains(&server));
}

#[test]
fn a_parse_batch_is_answered_without_a_backend() {
    let mut s = Statements::default();
    let mut batch = msg(b'P', b"s1\0select 1\0\0\0");
    batch.extend(msg(b'P', b"s2\0select 2\0\0\0"));
    batch.extend(msg(b'S', b""));
    let mut reply = BytesMut::new();
    assert_eq!(
        s.answer_parse_batch(&batch, 1 << 20, &mut reply),
        Some(batch.len())
    );
    assert_eq!(&reply[..], b"1\0\0\0\x041\0\0\0\x04Z\0\0\0\x05I");
    // Used later on some backend: prepared there first.
    let (mut on, mut expected, mut out) = (HashSet::new(), Expected::default(), BytesMut::new());
    s.rewrite(
        &msg(b'B', b"\0s2\0\0\0\0\0\0\0"),
        &mut on,
        &mut expected,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        names_in(&out).iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![b'P', b'B']
    );
    assert!(expected.parse_complete());
    // Not such a batch: incomplete, unnamed, or with anything else in it.
    assert_eq!(
        s.answer_parse_batch(&batch[..batch.len() - 1], 1 << 20, &mut reply),
        None
    );
    let mut unnamed = msg(b'P', b"\0select 1\0\0\0");
    unnamed.extend(msg(b'S', b""));
    assert_eq!(s.answer_parse_batch(&unnamed, 1 << 20, &mut reply), None);
    let mut with_describe = msg(b'P', b"s3\0select 1\0\0\0");
    with_describe.extend(msg(b'D', b"Ss3\0"));
    with_describe.extend(msg(b'S', b""));
    assert_eq!(
        s.answer_parse_batch(&with_describe, 1 << 20, &mut reply),
        None
    );
    assert_eq!(
        s.answer_parse_batch(&msg(b'S', b""), 1 << 20, &mut reply),
        None
    );
}

#[test]
fn sql_names_protocol_statements_by_their_server_names() {
    let mut s = Statements::default();
    let (mut on, mut expected) = (HashSet::new(), Expected::default());
    for m in [
        msg(b'P', b"s1\0select $1\0\0\0"),
        msg(b'P', b"Odd \"One\"\0select 2\0\0\0"),
    ] {
        s.rewrite(&m, &mut on, &mut expected, &mut BytesMut::new())
            .unwrap();
    }
    let server = |s: &Statements, name: &str| s.by_client_name[name].server_name.clone();
    let (s1, odd) = (server(&s, "s1"), server(&s, "Odd \"One\""));
    // On a backend that has them: names replaced, nothing sent before.
    let mut out = BytesMut::new();
    let sql = "EXECUTE S1(1); /* execute s1 */ explain execute \"Odd \"\"One\"\"\"; execute other";
    let (rewritten, sent) = s
        .rewrite_sql(sql, &mut on, &mut expected, &mut out)
        .unwrap();
    assert_eq!(
        rewritten,
        format!("EXECUTE \"{s1}\"(1); /* execute s1 */ explain execute \"{odd}\"; execute other")
    );
    // A name touching the keyword stays a token of its own (found by the `sql` fuzz target).
    let (rewritten, _) = s
        .rewrite_sql("EXECUTE\"s1\"", &mut on, &mut expected, &mut out)
        .unwrap();
    assert_eq!(rewritten, format!("EXECUTE\"{s1}\""));
    // Nor does it run into a quoted word after it (`"p""x"` would be one name).
    let (rewritten, _) = s
        .rewrite_sql("execute s1\"x\"", &mut on, &mut expected, &mut out)
        .unwrap();
    assert_eq!(rewritten, format!("execute \"{s1}\" \"x\""));
    assert!(!sent && out.is_empty());
    // Nothing to do: no statements named, or none known.
    assert!(
        s.rewrite_sql("select 1", &mut on, &mut expected, &mut out)
            .is_none()
    );
    assert!(
        s.rewrite_sql("execute nope", &mut on, &mut expected, &mut out)
            .is_none()
    );
    assert!(
        s.rewrite_sql("select 'execute s1'", &mut on, &mut expected, &mut out)
            .is_none()
    );
    assert!(
        s.rewrite_sql("execute \"s1", &mut on, &mut expected, &mut out)
            .is_none()
    );
    // On a backend that lacks it: its Parse goes first; DEALLOCATE forgets it.
    let (mut other, mut expected) = (HashSet::new(), Expected::default());
    let (rewritten, sent) = s
        .rewrite_sql("deallocate prepare s1", &mut other, &mut expected, &mut out)
        .unwrap();
    assert_eq!(rewritten, format!("deallocate prepare \"{s1}\""));
    assert!(sent);
    assert_eq!(names_in(&out), vec![(b'P', s1.clone())]);
    assert!(expected.parse_complete(), "its ParseComplete is hidden");
    assert!(!other.contains(&s1) && !s.by_client_name.contains_key("s1"));
    // DEALLOCATE ALL forgets every statement.
    assert!(
        s.rewrite_sql("DEALLOCATE ALL", &mut on, &mut expected, &mut out)
            .is_none()
    );
    assert!(s.by_client_name.is_empty() && on.is_empty());
}

#[test]
fn unnamed_and_unknown_statements_pass_unchanged() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut expected = Expected::default();
    for m in [
        msg(b'P', b"\0select 1\0\0\0"),
        msg(b'B', b"\0nope\0\0\0\0\0\0\0"),
        msg(b'D', b"Pportal\0"),
    ] {
        let mut out = BytesMut::new();
        s.rewrite(&m, &mut on, &mut expected, &mut out).unwrap();
        assert_eq!(&out[..], &m[..]);
    }
    assert!(
        s.rewrite(
            &msg(b'B', b"no-nul"),
            &mut on,
            &mut expected,
            &mut BytesMut::new()
        )
        .is_err()
    );
}

#[test]
fn errors_drop_the_parse_completes_that_will_not_come() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut e = Expected::default();
    e.push(Expect::ParseComplete { hide: true, id: 0 });
    e.push(Expect::ParseComplete { hide: false, id: 0 });
    e.push(Expect::Ready);
    e.push(Expect::ParseComplete { hide: true, id: 0 });
    e.push(Expect::Ready);
    assert!(e.parse_complete());
    assert_eq!(s.error(&mut e, &mut on), None);
    assert!(!e.ready());
    assert!(
        e.parse_complete(),
        "the next batch's hidden Parse is still owed"
    );
    e.ready();
    assert!(e.owed.is_empty());
}

/// Runs each message through `rewrite`; returns what went to the backend.
fn send(
    s: &mut Statements,
    on: &mut HashSet<String>,
    e: &mut Expected,
    msgs: &[Vec<u8>],
) -> BytesMut {
    let mut out = BytesMut::new();
    for m in msgs {
        s.rewrite(m, on, e, &mut out).unwrap();
    }
    out
}

#[test]
fn a_parse_of_a_name_in_use_is_refused_at_its_place() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut e = Expected::default();
    send(&mut s, &mut on, &mut e, &[msg(b'P', b"s1\0select 1\0\0\0")]);
    assert!(!e.parse_complete(), "the client's ParseComplete");

    let out = send(
        &mut s,
        &mut on,
        &mut e,
        &[msg(b'P', b"s1\0select 2\0\0\0"), msg(b'S', b"")],
    );
    // The query as the unnamed statement (its own errors first), then a Describe that fails.
    assert_eq!(
        names_in(&out),
        vec![
            (b'P', String::new()),
            (b'D', "pgvalet: statement name in use".to_owned()),
            (b'S', String::new())
        ]
    );
    assert!(out.windows(8).any(|w| w == b"select 2"));
    assert!(e.parse_complete(), "the stand-in Parse's answer is hidden");
    assert!(e.refusal_next());
    assert_eq!(s.error(&mut e, &mut on).as_deref(), Some("s1"));
    assert!(!e.ready(), "the client's Sync is answered");
    assert!(e.owed.is_empty() && e.refused.is_empty());

    // The first statement stays: a Bind of it is renamed, with no Parse sent.
    let out = send(&mut s, &mut on, &mut e, &[msg(b'B', b"\0s1\0\0\0\0\0\0\0")]);
    assert_eq!(names_in(&out).len(), 1);
}

#[test]
fn a_refusal_skipped_after_an_earlier_error_leaves_that_error_alone() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut e = Expected::default();
    send(&mut s, &mut on, &mut e, &[msg(b'P', b"s1\0select 1\0\0\0")]);
    e.parse_complete();
    // An Execute fails before the stand-in Parse: the backend skips the stand-in.
    send(
        &mut s,
        &mut on,
        &mut e,
        &[msg(b'P', b"s1\0select 2\0\0\0"), msg(b'S', b"")],
    );
    assert!(!e.refusal_next());
    assert_eq!(s.error(&mut e, &mut on), None);
    assert!(e.refused.is_empty(), "its name went with it");
    assert!(!e.ready());
    assert!(e.owed.is_empty());
}

#[test]
fn a_parse_that_failed_or_was_skipped_makes_no_statement() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut e = Expected::default();
    // The Parse of s1 fails; s2's, behind it in the pipeline, is skipped.
    send(
        &mut s,
        &mut on,
        &mut e,
        &[
            msg(b'P', b"s1\0selec 1\0\0\0"),
            msg(b'P', b"s2\0select 2\0\0\0"),
            msg(b'S', b""),
        ],
    );
    assert_eq!(on.len(), 2);
    assert_eq!(s.error(&mut e, &mut on), None);
    assert!(on.is_empty(), "the backend has neither");
    e.ready();
    // Both names are free.
    let out = send(
        &mut s,
        &mut on,
        &mut e,
        &[
            msg(b'P', b"s1\0select 1\0\0\0"),
            msg(b'P', b"s2\0select 2\0\0\0"),
        ],
    );
    let names = names_in(&out);
    assert!(
        names
            .iter()
            .all(|(t, n)| *t == b'P' && n.starts_with("pgv")),
        "{names:?}"
    );
}

#[test]
fn a_prepared_again_statement_skipped_after_an_error_is_prepared_again_next_time() {
    let mut s = Statements::default();
    let (mut first, mut second) = (HashSet::new(), HashSet::new());
    let mut e = Expected::default();
    send(
        &mut s,
        &mut first,
        &mut e,
        &[msg(b'P', b"s1\0select 1\0\0\0")],
    );
    e.parse_complete();
    // On another backend, a failing Execute comes before the Bind that brings s1 there.
    let bind = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
    send(&mut s, &mut second, &mut e, std::slice::from_ref(&bind));
    assert_eq!(second.len(), 1);
    s.error(&mut e, &mut second);
    assert!(second.is_empty(), "the backend skipped the Parse");
    let out = send(&mut s, &mut second, &mut e, &[bind]);
    assert_eq!(names_in(&out).len(), 2, "the Parse is sent again");
}

#[test]
fn discard_all_frees_every_name() {
    let mut s = Statements::default();
    let mut on = HashSet::new();
    let mut e = Expected::default();
    send(&mut s, &mut on, &mut e, &[msg(b'P', b"s1\0select 1\0\0\0")]);
    assert!(
        s.rewrite_sql("discard all", &mut on, &mut e, &mut BytesMut::new())
            .is_none()
    );
    assert!(on.is_empty());
    let out = send(&mut s, &mut on, &mut e, &[msg(b'P', b"s1\0select 1\0\0\0")]);
    assert!(names_in(&out)[0].1.starts_with("pgv"), "not refused");
}

#[test]
fn a_parse_batch_that_reuses_a_name_waits_for_a_backend() {
    let mut s = Statements::default();
    let mut reply = BytesMut::new();
    let batch = [msg(b'P', b"s1\0select 1\0\0\0"), msg(b'S', b"")].concat();
    assert!(s.answer_parse_batch(&batch, 1 << 20, &mut reply).is_some());
    assert!(s.answer_parse_batch(&batch, 1 << 20, &mut reply).is_none());
    let twice = [
        msg(b'P', b"s2\0select 1\0\0\0"),
        msg(b'P', b"s2\0select 1\0\0\0"),
        msg(b'S', b""),
    ]
    .concat();
    assert!(s.answer_parse_batch(&twice, 1 << 20, &mut reply).is_none());
}
