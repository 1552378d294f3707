//! Tests of the line parser: commands, keys, transactions.

use super::*;
use serde_json::json;

fn cmd(line: &str) -> Value {
    match Parser::new().parse_line(line) {
        Ok(Parsed::Command(c)) => Value::Object(c),
        other => panic!("{line:?}: {other:?}"),
    }
}

fn args(line: &str) -> Value {
    cmd(line)["arguments"].clone()
}

fn err(line: &str) -> String {
    match Parser::new().parse_line(line) {
        Err(ParseError(e)) => e,
        other => panic!("{line:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn command_shape_and_key_order() {
    let c = cmd("query-status");
    assert_eq!(
        c.to_string(),
        r#"{"execute":"query-status","arguments":{}}"#
    );
    let c = cmd("  device_add driver=e1000 id=net1  ");
    assert_eq!(
        c.to_string(),
        r#"{"execute":"device_add","arguments":{"driver":"e1000","id":"net1"}}"#
    );
    assert_eq!(cmd("z=1")["execute"], json!("z=1"));
    assert_eq!(cmd("\"quoted name\"")["execute"], json!("\"quoted name\""));
}

#[test]
fn empty_lines() {
    let mut p = Parser::new();
    assert_eq!(p.parse_line(""), Ok(Parsed::Empty));
    assert_eq!(p.parse_line(" \t\u{3000}"), Ok(Parsed::Empty));
    assert_eq!(p.parse_line("'"), Ok(Parsed::Empty));
    assert!(!p.in_transaction());
}

#[test]
fn key_value_errors() {
    assert_eq!(err("cmd foo"), "Expected a key=value pair, got 'foo'");
    assert_eq!(
        err("cmd a=1 'x y'"),
        "Expected a key=value pair, got ''x y''"
    );
    assert_eq!(err("cmd a=1 b"), "Expected a key=value pair, got 'b'");
    assert_eq!(args("cmd a==b"), json!({"a": "=b"}));
    assert_eq!(args("cmd =1"), json!({"": 1}));
    assert_eq!(args("cmd a="), json!({"a": ""}));
}

#[test]
fn values_in_lines() {
    assert_eq!(
        args("cmd i=-12 b=TRUE s=str f=1.5 j={\"a\":[1,2]} p={'a':(1,None)}"),
        json!({"i": -12, "b": true, "s": "str", "f": "1.5", "j": {"a": [1, 2]}, "p": {"a": [1, null]}})
    );
    assert_eq!(
        args("human-monitor-command command-line=\"info version\""),
        json!({"command-line": "info version"})
    );
    assert_eq!(args("cmd x=a\"b c\"d"), json!({"x": "ab cd"}));
    assert_eq!(args("cmd x=\"1\" y='true'"), json!({"x": "1", "y": "true"}));
    assert_eq!(args("cmd x={\"a\":\"b c\"}"), json!({"x": {"a": "b c"}}));
    assert_eq!(args("cmd x=[1,\"a b\"]"), json!({"x": [1, "a b"]}));
    assert_eq!(args("cmd x={a:1}"), json!({"x": "{a:1}"}));
    assert_eq!(args("cmd x=été y=😀"), json!({"x": "été", "y": "😀"}));
    let big = "1".repeat(200);
    assert_eq!(args(&format!("cmd n={big}"))["n"].to_string(), big);
}

#[test]
fn refused_values_name_the_key() {
    assert_eq!(
        err("cmd a.b={1,2}"),
        "Value for \"a.b\" cannot be sent as JSON: sets are not supported"
    );
    assert_eq!(
        err("cmd x=[b'x']"),
        "Value for \"x\" cannot be sent as JSON: bytes are not supported"
    );
    assert_eq!(
        err("cmd x=[NaN]"),
        "Value for \"x\" cannot be sent as JSON: NaN is not supported"
    );
    assert_eq!(
        err("cmd x=[1e400]"),
        "Value for \"x\" cannot be sent as JSON: infinite numbers (Infinity) are not supported"
    );
    assert_eq!(
        err("cmd x=[1j]"),
        "Value for \"x\" cannot be sent as JSON: complex numbers are not supported"
    );
    assert_eq!(
        err(&format!("cmd x={}", "[".repeat(5000))),
        "Value for \"x\" is nested too deeply (more than 1000 levels)"
    );
    // The key error wins over a value that cannot be sent, as the
    // reference checks the key before sending anything.
    assert_eq!(err("cmd a=1 a={1,2}"), "Cannot set \"a\" multiple times");
    assert_eq!(err("cmd a={1,2} a=1"), "Cannot set \"a\" multiple times");
    assert_eq!(err("cmd a=[NaN] b"), "Expected a key=value pair, got 'b'");
    assert_eq!(
        err("cmd a=[NaN] b=[1j]"),
        "Value for \"a\" cannot be sent as JSON: NaN is not supported"
    );
    // A refused value keeps its shape for the key checks that follow.
    assert_eq!(
        err("cmd a={'x':{1,2}} a.b=1"),
        "Value for \"a\" cannot be sent as JSON: sets are not supported"
    );
    assert_eq!(
        err("cmd a={\"x\":NaN} a.x=1"),
        "Cannot set \"a.x\" multiple times"
    );
    // Too deep is reported at once (the reference dies reading it).
    assert_eq!(
        err(&format!("cmd x={} b", "[".repeat(1001))),
        "Value for \"x\" is nested too deeply (more than 1000 levels)"
    );
}

#[test]
fn dotted_keys_nest() {
    assert_eq!(args("cmd a.b=1 c=2"), json!({"a": {"b": 1}, "c": 2}));
    assert_eq!(args("cmd a.b=1 a.c=2"), json!({"a": {"b": 1, "c": 2}}));
    assert_eq!(
        args("cmd a.b.c=1 a.b.d=2 a.e=3 f=4"),
        json!({"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4})
    );
    assert_eq!(
        args("cmd x.y=1 a.b=2 x.z=3"),
        json!({"x": {"y": 1, "z": 3}, "a": {"b": 2}})
    );
    assert_eq!(
        args("cmd a={\"x\":1} a.b=2"),
        json!({"a": {"x": 1, "b": 2}})
    );
    assert_eq!(
        args("cmd .a=1 b.=2 c..d=3"),
        json!({"": {"a": 1}, "b": {"": 2}, "c": {"": {"d": 3}}})
    );
    assert_eq!(
        cmd("cmd b.x=1 a=2").to_string(),
        r#"{"execute":"cmd","arguments":{"b":{"x":1},"a":2}}"#
    );
}

#[test]
fn key_conflicts() {
    assert_eq!(err("cmd a=1 a=2"), "Cannot set \"a\" multiple times");
    assert_eq!(err("cmd a.b=1 a.b=2"), "Cannot set \"a.b\" multiple times");
    assert_eq!(
        err("cmd a=1 a.b=2"),
        "Cannot use \"a\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a.b=1 a=2"),
        "Cannot use \"a\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a.b.c=1 a.b=2"),
        "Cannot use \"a.b\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a.b=1 a.b.c=2"),
        "Cannot use \"a.b\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a.b.c=1 a=2"),
        "Cannot use \"a\" as both leaf and non-leaf key"
    );
    // An object given as a value: the reference names the parent path.
    assert_eq!(
        err("cmd a={} a=2"),
        "Cannot use \"\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a={\"b\":{}} a.b=2"),
        "Cannot use \"a\" as both leaf and non-leaf key"
    );
    assert_eq!(
        err("cmd a={\"b\":1} a.b=2"),
        "Cannot set \"a.b\" multiple times"
    );
    assert_eq!(
        err("cmd a=[] a.b=2"),
        "Cannot use \"a\" as both leaf and non-leaf key"
    );
}

#[test]
fn parse_arguments_directly() {
    let tokens: Vec<String> = ["a.b=1", "c=[1]"].iter().map(|s| s.to_string()).collect();
    let mut obj = Object::new();
    parse_arguments(&tokens, &mut obj).unwrap();
    assert_eq!(Value::Object(obj), json!({"a": {"b": 1}, "c": [1]}));
    let mut obj = Object::new();
    parse_arguments(&[], &mut obj).unwrap();
    assert!(obj.is_empty());
}

#[test]
fn parse_arguments_example_of_its_documentation() {
    // Once a doctest; the function is internal now.
    let tokens: Vec<String> = ["a.b=1", "c=x"].iter().map(|s| s.to_string()).collect();
    let mut args = Object::new();
    parse_arguments(&tokens, &mut args).unwrap();
    assert_eq!(Value::Object(args).to_string(), r#"{"a":{"b":1},"c":"x"}"#);
}

#[test]
fn parse_value_errors_have_no_key() {
    assert_eq!(
        parse_value("{1,2}"),
        Err(ParseError(
            "Value cannot be sent as JSON: sets are not supported".into()
        ))
    );
    assert_eq!(parse_value("x"), Ok(json!("x")));
}

#[test]
fn multi_line_transaction() {
    let mut p = Parser::new();
    assert_eq!(p.prompt(), "(QEMU) ");
    assert_eq!(p.parse_line("transaction("), Ok(Parsed::Queued));
    assert!(p.in_transaction());
    assert_eq!(p.prompt(), "TRANS> ");
    assert_eq!(
        p.parse_line("block-dirty-bitmap-add node=drive0 name=bitmap1"),
        Ok(Parsed::Queued)
    );
    assert_eq!(p.parse_line(""), Ok(Parsed::Empty));
    assert_eq!(p.parse_line("abort"), Ok(Parsed::Queued));
    let Ok(Parsed::Command(c)) = p.parse_line(")") else {
        panic!()
    };
    assert_eq!(
        Value::Object(c).to_string(),
        r#"{"execute":"transaction","arguments":{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"drive0","name":"bitmap1"}},{"type":"abort","data":{}}]}}"#
    );
    assert!(!p.in_transaction());
    assert_eq!(p.prompt(), "(QEMU) ");
}

#[test]
fn transaction_opening_line_carries_an_action() {
    let mut p = Parser::new();
    assert_eq!(p.parse_line("transaction( a x=1"), Ok(Parsed::Queued));
    assert_eq!(
        p.parse_line("b y=2 )"),
        Ok(Parsed::Command(cmd_obj(
            json!({"execute": "transaction", "arguments": {"actions": [
        {"type": "a", "data": {"x": 1}}, {"type": "b", "data": {"y": 2}}]}})
        )))
    );
    assert!(!p.in_transaction());
}

fn cmd_obj(v: Value) -> Object {
    match v {
        Value::Object(o) => o,
        _ => unreachable!(),
    }
}

#[test]
fn one_line_transactions() {
    assert_eq!(
        cmd("transaction( abort )"),
        json!({"execute": "transaction", "arguments": {"actions": [{"type": "abort", "data": {}}]}})
    );
    assert_eq!(
        cmd("transaction( t a.b=1 c=2 )"),
        json!({"execute": "transaction", "arguments": {"actions": [{"type": "t", "data": {"a": {"b": 1}, "c": 2}}]}})
    );
    assert_eq!(
        cmd("transaction( )"),
        json!({"execute": "transaction", "arguments": {"actions": []}})
    );
    let mut p = Parser::new();
    assert_eq!(
        p.parse_line("transaction( ) x"),
        Err(ParseError(
            "Unexpected input after close of Transaction sub-shell".into()
        ))
    );
    assert!(!p.in_transaction());
}

#[test]
fn close_with_extra_input_drops_the_transaction() {
    let mut p = Parser::new();
    p.parse_line("transaction(").unwrap();
    p.parse_line("a").unwrap();
    assert_eq!(
        p.parse_line(") x=1"),
        Err(ParseError(
            "Unexpected input after close of Transaction sub-shell".into()
        ))
    );
    assert!(!p.in_transaction());
    assert_eq!(
        p.parse_line("query-status"),
        Ok(Parsed::Command(cmd_obj(
            json!({"execute": "query-status", "arguments": {}})
        )))
    );
}

#[test]
fn error_on_the_opening_line_abandons_the_transaction() {
    let mut p = Parser::new();
    assert_eq!(
        p.parse_line("transaction( t x )"),
        Err(ParseError("Expected a key=value pair, got 'x'".into()))
    );
    assert!(!p.in_transaction());
    assert_eq!(p.prompt(), "(QEMU) ");
    assert!(matches!(
        p.parse_line("query-status"),
        Ok(Parsed::Command(_))
    ));

    let mut p = Parser::new();
    assert!(p.parse_line("transaction( t a=1 a=2").is_err());
    assert!(!p.in_transaction());
}

#[test]
fn error_on_a_later_line_abandons_the_whole_transaction() {
    let mut p = Parser::new();
    p.parse_line("transaction(").unwrap();
    p.parse_line("a x=1").unwrap();
    p.parse_line("a x=2").unwrap();
    assert_eq!(p.take_abandoned(), None);
    assert_eq!(
        p.parse_line("b oops"),
        Err(ParseError("Expected a key=value pair, got 'oops'".into()))
    );
    assert!(!p.in_transaction());
    assert_eq!(p.take_abandoned(), Some(2));
    assert_eq!(p.take_abandoned(), None);
    // The closing line is now a command of its own, as outside a transaction.
    assert_eq!(
        p.parse_line(")"),
        Ok(Parsed::Command(cmd_obj(
            json!({"execute": ")", "arguments": {}})
        )))
    );
}

#[test]
fn reopening_resets_and_abort_drops() {
    let mut p = Parser::new();
    p.parse_line("transaction(").unwrap();
    p.parse_line("a").unwrap();
    p.parse_line("transaction( b").unwrap();
    assert_eq!(p.take_abandoned(), Some(1));
    let Ok(Parsed::Command(c)) = p.parse_line(")") else {
        panic!()
    };
    assert_eq!(
        c["arguments"]["actions"],
        json!([{"type": "b", "data": {}}])
    );

    p.parse_line("transaction(").unwrap();
    p.parse_line("a").unwrap();
    assert_eq!(p.abort_transaction(), Some(1));
    assert!(!p.in_transaction());
    assert_eq!(p.abort_transaction(), None);
    assert_eq!(
        p.parse_line(")"),
        Ok(Parsed::Command(cmd_obj(
            json!({"execute": ")", "arguments": {}})
        )))
    );
}

#[test]
fn close_paren_outside_a_transaction_is_a_command() {
    assert_eq!(args(") a=1"), json!({"a": 1}));
    assert_eq!(cmd(")")["execute"], json!(")"));
    assert_eq!(err("cmd )"), "Expected a key=value pair, got ')'");
}

#[test]
fn transaction_token_must_be_exact() {
    assert_eq!(cmd("transaction")["execute"], json!("transaction"));
    assert_eq!(
        err("x transaction("),
        "Expected a key=value pair, got 'transaction('"
    );
}

#[test]
fn never_panics_on_odd_input() {
    let mut p = Parser::new();
    for line in [
        "\0",
        "\u{feff}",
        "a\\",
        "'\"'\"",
        "x=\"",
        "x=[\"",
        "x={'a':",
        "x=\u{10ffff}",
        "x=[1e999999999999]",
        "x=0x",
        "x=[0x]",
        "x=['\\N{']",
        "x=[--1]",
        "x=[1+]",
        "x=[r'\\']",
        "x=[b'\\x']",
        "x=[\"\\ud800\"]",
        "x={'a': {1,2}}",
    ] {
        let _ = p.parse_line(line);
        let _ = p.parse_line("transaction(");
        let _ = p.parse_line(line);
        p.abort_transaction();
    }
}
