//! Examples from the Go text/template documentation and the sprig docs, plus bad input.

use super::*;
use serde_json::json;

fn r(t: &str, data: serde_json::Value) -> String {
    render("t.yaml", t, &data).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn e(t: &str, data: serde_json::Value) -> String {
    match render("t.yaml", t, &data) {
        Ok(out) => panic!("{t}: expected an error, got {out:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn go_doc_actions_and_pipelines() {
    let d = json!({"Name": "x", "Items": ["a", "b"], "M": {"b": 2, "a": 1}, "N": 3});
    assert_eq!(r("{{23 -}} < {{- 45}}", json!({})), "23<45");
    assert_eq!(
        r("{{/* a comment */}}x{{- /* trimmed */ -}} y", json!({})),
        "xy"
    );
    assert_eq!(
        r(
            r#"{{"output"}} {{`raw`}} {{printf "%q" "output"}} {{"put" | printf "%s%s" "out"}}"#,
            json!({})
        ),
        "output raw \"output\" output"
    );
    assert_eq!(
        r(
            r#"{{printf "%d" (len .Items)}} {{.Items | len}}"#,
            d.clone()
        ),
        "2 2"
    );
    assert_eq!(
        r(
            "{{with $x := \"output\"}}{{printf \"%q\" $x}}{{end}}",
            json!({})
        ),
        "\"output\""
    );
    assert_eq!(
        r("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", json!({})),
        "2"
    );
    assert_eq!(
        r("{{range $i, $e := .Items}}{{$i}}={{$e}};{{end}}", d.clone()),
        "0=a;1=b;"
    );
    assert_eq!(
        r("{{range $k, $v := .M}}{{$k}}:{{$v}} {{end}}", d.clone()),
        "a:1 b:2 "
    );
    assert_eq!(r("{{range .N}}{{.}}{{end}}", d.clone()), "012");
    assert_eq!(
        r("{{range .Empty}}x{{else}}none{{end}}", json!({"Empty": []})),
        "none"
    );
    assert_eq!(
        r(
            "{{range .Items}}{{if eq . \"b\"}}{{break}}{{end}}{{.}}{{end}}",
            d.clone()
        ),
        "a"
    );
    assert_eq!(
        r(
            "{{range .Items}}{{if eq . \"a\"}}{{continue}}{{end}}{{.}}{{end}}",
            d.clone()
        ),
        "b"
    );
    assert_eq!(
        r(
            "{{if eq .N 1}}one{{else if eq .N 3}}three{{else}}other{{end}}",
            d.clone()
        ),
        "three"
    );
    assert_eq!(
        r(
            "{{with .Missing}}x{{else with .Name}}{{.}}{{end}}",
            json!({"Missing": "", "Name": "n"})
        ),
        "n"
    );
    assert_eq!(
        r(
            r#"{{define "T1"}}ONE{{end}}{{define "T2"}}TWO {{template "T1"}}{{end}}{{template "T2"}}"#,
            json!({})
        ),
        "TWO ONE"
    );
    assert_eq!(r(r#"{{block "B" .Name}}[{{.}}]{{end}}"#, d.clone()), "[x]");
    assert_eq!(
        r(
            "{{.M}} {{.Items}} {{.Nil}} {{1.5}} {{1e6}}",
            json!({"M": {"b": 2, "a": [1]}, "Items": [1, "x"], "Nil": null})
        ),
        "map[a:[1] b:2] [1 x] <no value> 1.5 1e+06"
    );
    assert_eq!(
        r(
            "{{(index .M \"a\")}} {{index .Items 1}} {{slice .Items 1}}",
            d.clone()
        ),
        "1 b [b]"
    );
}

#[test]
fn comparisons_follow_go() {
    assert_eq!(
        r(
            "{{eq 1 2 3 1}} {{ne \"a\" \"b\"}} {{lt 1 2}} {{le 2 2}} {{gt 1.5 0.5}} {{ge \"b\" \"a\"}}",
            json!({})
        ),
        "true true true true true true"
    );
    assert_eq!(
        r("{{and 1 0 2}} {{or 0 \"\" 3}} {{not true}}", json!({})),
        "0 3 false"
    );
    assert!(
        e("{{lt 1 1.5}}", json!({}))
            .contains("error calling lt: incompatible types for comparison")
    );
    assert!(e("{{eq 1 \"1\"}}", json!({})).contains("incompatible types for comparison"));
    assert_eq!(
        r(
            "{{html \"<a href='x'>\"}} {{js \"it's <b>\"}} {{urlquery \"a b&c\"}}",
            json!({})
        ),
        "&lt;a href=&#39;x&#39;&gt; it\\'s \\u003Cb\\u003E a+b%26c"
    );
    assert_eq!(
        r("{{print 1 2 \"a\" 3}}|{{println 1 \"a\"}}", json!({})),
        "1 2a3|1 a\n"
    );
    assert_eq!(
        r(
            "{{printf \"%5.2f|%-4s|%03d|%x|%v|%t\" 3.14159 \"ab\" 7 255 .L true}}",
            json!({"L": [1, 2]})
        ),
        " 3.14|ab  |007|ff|[1 2]|true"
    );
}

#[test]
fn sprig_doc_examples() {
    let d = json!({});
    assert_eq!(
        r(
            r#"{{ trim "   hello    " }}|{{ trimAll "$" "$5.00" }}|{{ trimSuffix "-" "hello-" }}|{{ trimPrefix "-" "-hello" }}"#,
            d.clone()
        ),
        "hello|5.00|hello|hello"
    );
    assert_eq!(
        r(
            r#"{{ upper "hello" }} {{ lower "HELLO" }} {{ title "hello world" }} {{ untitle "Hello World" }}"#,
            d.clone()
        ),
        "HELLO hello Hello World hello world"
    );
    assert_eq!(
        r(
            r#"{{ repeat 3 "hello" }}|{{ substr 0 5 "hello world" }}|{{ nospace "hello w o r l d" }}|{{ trunc 5 "hello world" }}|{{ trunc -5 "hello world" }}"#,
            d.clone()
        ),
        "hellohellohello|hello|helloworld|hello|world"
    );
    assert_eq!(
        r(
            r#"{{ abbrev 5 "hello world" }}|{{ abbrevboth 5 10 "1234 5678 9123" }}|{{ initials "First Try" }}"#,
            d.clone()
        ),
        "he...|...5678...|FT"
    );
    assert_eq!(
        r(
            r#"{{ wrap 80 "short" }}|{{ wrapWith 5 "\t" "Hello World" }}|{{ contains "cat" "catch" }}|{{ hasPrefix "cat" "catch" }}|{{ hasSuffix "ch" "catch" }}"#,
            d.clone()
        ),
        "short|Hello\tWorld|true|true|true"
    );
    assert_eq!(
        r(
            r#"{{ quote "a" 1 }}|{{ squote "b" }}|{{ cat "hello" "beautiful" "world" }}|{{ indent 4 "a\nb" }}|{{ nindent 2 "x" }}"#,
            d.clone()
        ),
        "\"a\" \"1\"|'b'|hello beautiful world|    a\n    b|\n  x"
    );
    assert_eq!(
        r(
            r#"{{ "I Am Henry VIII" | replace " " "-" }}|{{ len .L | plural "one anchovy" "many anchovies" }}|{{ snakecase "FirstName" }}|{{ camelcase "http_server" }}|{{ kebabcase "FirstName" }}|{{ swapcase "This Is A.Test" }}"#,
            json!({"L": [1, 2]})
        ),
        "I-Am-Henry-VIII|many anchovies|first_name|HttpServer|first-name|tHIS iS a.tEST"
    );
    assert_eq!(
        r(
            r#"{{ sha1sum "Hello world!" }}|{{ sha256sum "Hello world!" }}|{{ adler32sum "Hello world!" }}"#,
            d.clone()
        ),
        "d3486ae9136e7856bc42212385ea797094475802|c0535e4be2b79ffd93291305436bf889314e4a3faec05ecffcbb7df31ad9e51a|487130206"
    );
    assert_eq!(
        r(
            r#"{{ b64enc "hello" }}|{{ b64dec "aGVsbG8=" }}|{{ b32enc "hello" }}|{{ b32dec "NBSWY3DP" }}"#,
            d.clone()
        ),
        "aGVsbG8=|hello|NBSWY3DP|hello"
    );
    assert_eq!(
        r(
            r#"{{ int "42" }} {{ int64 "0x10" }} {{ float64 "1.5" }} {{ atoi "12" }} {{ toString 5 }} {{ toDecimal "0777" }}"#,
            d.clone()
        ),
        "42 16 1.5 12 5 511"
    );
    assert_eq!(
        r(
            r#"{{ add 1 2 3 }} {{ add1 1 }} {{ sub 3 2 }} {{ div 6 3 }} {{ mod 7 3 }} {{ mul 2 3 4 }} {{ max 1 5 3 }} {{ min 4 2 }} {{ floor 1.7 }} {{ ceil 1.2 }} {{ round 3.14159 2 }}"#,
            d.clone()
        ),
        "6 2 1 2 1 24 5 2 1 2 3.14"
    );
    assert_eq!(
        r(
            r#"{{ until 3 }} {{ untilStep 1 8 3 }} {{ seq 5 }} {{ seq 0 2 6 }}"#,
            d.clone()
        ),
        "[0 1 2] [1 4 7] 1 2 3 4 5 0 2 4 6"
    );
    assert_eq!(
        r(
            r#"{{ $s := split "$" "foo$bar$baz" }}{{ $s._1 }}|{{ splitList "," "a,b" }}|{{ join "-" (list 1 "b") }}|{{ sortAlpha (list "c" "a") }}|{{ splitn "$" 2 "a$b$c" }}"#,
            d.clone()
        ),
        "bar|[a b]|1-b|[a c]|map[_0:a _1:b$c]"
    );
    assert_eq!(
        r(
            r#"{{ default "foo" .E }} {{ default "foo" "bar" }} {{ empty 0 }} {{ coalesce 0 "" "x" }} {{ ternary "yes" "no" true }} {{ all 1 "a" }} {{ any 0 "" }}"#,
            json!({"E": ""})
        ),
        "foo bar true x yes true false"
    );
    assert_eq!(
        r(
            r#"{{ $l := list 1 2 3 }}{{ first $l }} {{ last $l }} {{ rest $l }} {{ initial $l }} {{ reverse $l }} {{ append $l 4 }} {{ prepend $l 0 }} {{ has 2 $l }} {{ without $l 2 }} {{ uniq (list 1 1 2) }} {{ compact (list 1 "" 2) }} {{ concat $l (list 9) }} {{ chunk 2 $l }} {{ slice $l 1 }}"#,
            d.clone()
        ),
        "1 3 [2 3] [1 2] [3 2 1] [1 2 3 4] [0 1 2 3] true [1 3] [1 2] [1 2] [1 2 3 9] [[1 2] [3]] [2 3]"
    );
    assert_eq!(
        r(
            r#"{{ $d := dict "a" 1 "b" 2 }}{{ get $d "a" }} {{ $_ := set $d "c" 3 }}{{ hasKey $d "c" }} {{ $_ := unset $d "a" }}{{ keys $d | sortAlpha }} {{ values $d }} {{ pick $d "b" }} {{ omit $d "b" }} {{ pluck "b" $d (dict "b" 7) }} {{ dig "x" "y" "def" (dict "x" (dict "y" "found")) }}"#,
            d.clone()
        ),
        "1 true [b c] [2 3] map[b:2] map[c:3] [2 7] found"
    );
    assert_eq!(
        r(
            r#"{{ $a := dict "a" 1 "n" (dict "x" 1) }}{{ $b := dict "a" 2 "b" 3 "n" (dict "y" 2) }}{{ merge $a $b }} {{ mergeOverwrite (dict "a" 1) (dict "a" 2) }}"#,
            d.clone()
        ),
        "map[a:1 b:3 n:map[x:1 y:2]] map[a:2]"
    );
    assert_eq!(
        r(
            r#"{{ toJson .M }} {{ toRawJson "<x>" }} {{ toJson "<x>" }} {{ (fromJson "{\"a\":1}").a }} {{ toPrettyJson (dict "a" (list 1)) }}"#,
            json!({"M": {"b": [1, true, null], "a": "s"}})
        ),
        "{\"a\":\"s\",\"b\":[1,true,null]} \"<x>\" \"\\u003cx\\u003e\" 1 {\n  \"a\": [\n    1\n  ]\n}"
    );
    assert_eq!(
        r(
            r#"{{ kindOf "x" }} {{ typeOf 1 }} {{ kindIs "map" .M }} {{ typeOf (list) }} {{ deepEqual (list 1) (list 1) }} {{ typeOf (until 2) }}"#,
            json!({"M": {}})
        ),
        "string int true []interface {} true []int"
    );
    assert_eq!(
        r(
            r#"{{ regexMatch "^[a-z]+$" "abc" }} {{ regexFindAll "[2,4,6,8]" "123456789" -1 }} {{ regexFind "[a-zA-Z][1-9]" "abcd1234" }} {{ regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W" }} {{ regexReplaceAllLiteral "a(x*)b" "-ab-" "${1}" }} {{ regexSplit "z+" "pizza" -1 }} {{ regexQuoteMeta "1.2" }}"#,
            d.clone()
        ),
        "true [2 4 6 8] d1 -W-xxW- -${1}- [pi a] 1\\.2"
    );
    assert_eq!(
        r(
            r#"{{ semverCompare ">=1.2.0" "1.3.0" }} {{ (semver "1.2.3-beta").Minor }} {{ (urlParse "http://u@h.com:80/p?q=1#f").hostname }} {{ urlJoin (dict "scheme" "https" "host" "x.io" "path" "/a") }}"#,
            d.clone()
        ),
        "true 2 h.com https://x.io/a"
    );
    assert_eq!(
        r(
            r#"{{ date "2006-01-02" (toDate "2006-01-02" "2021-07-04") }} {{ duration "95" }} {{ dateModify "1h" (toDate "2006-01-02" "2021-07-04") | date "15:04" }} {{ len uuidv4 }} {{ len (randAlphaNum 7) }} {{ durationRound "2h10m" }}"#,
            d.clone()
        ),
        "2021-07-04 1m35s 01:00 36 7 2h"
    );
    assert_eq!(
        r(
            r#"{{ toYaml .M }}"#,
            json!({"M": {"b": [1, "on"], "a": {"c": "x y"}}})
        ),
        "a:\n  c: x y\nb:\n- 1\n- \"on\"\n"
    );
}

#[test]
fn removed_functions_fail_at_parse_time() {
    for f in ["env", "expandenv", "base", "dir", "clean", "ext", "isAbs"] {
        let err = Template::parse("secrets.yaml", &format!("a\n{{{{ {f} \"HOME\" }}}}"))
            .expect_err("must not parse");
        assert_eq!(
            err.to_string(),
            format!("template: secrets.yaml:2:3: function \"{f}\" not defined")
        );
    }
}

#[test]
fn missing_key_names_template_line_and_key() {
    let err = e("a: 1\nname: {{ .Pipes.indexHtml }}\n", json!({"Pipes": {}}));
    assert_eq!(
        err,
        "template: t.yaml:2:15: executing \"t.yaml\" at <.Pipes.indexHtml>: map has no entry for key \"indexHtml\""
    );
    match render(
        "deploy/x.yaml",
        "{{ .Params.NOPE }}",
        &json!({"Params": {}}),
    ) {
        Err(TemplateError::Exec {
            template,
            line,
            col,
            message,
        }) => {
            assert_eq!((template.as_str(), line, col), ("deploy/x.yaml", 1, 10));
            assert!(message.contains("\"NOPE\""), "{message}");
        }
        other => panic!("expected exec error, got {other:?}"),
    }
}

#[test]
fn parse_errors_name_template_line_and_column() {
    let cases = [
        (
            "line1\n{{ if .X }}open",
            "template: p.yaml:2:",
            "unexpected EOF",
        ),
        ("{{ .X }", "template: p.yaml:1:", "unclosed action"),
        (
            "ok\n  {{ end }}",
            "template: p.yaml:2:",
            "unexpected {{end}}",
        ),
        (
            "{{ $y }}",
            "template: p.yaml:1:3:",
            "undefined variable \"$y\"",
        ),
        ("{{ }}", "template: p.yaml:1:", "missing command"),
        ("{{ 3x }}", "template: p.yaml:1:3:", "bad number syntax"),
        (
            "{{ break }}",
            "template: p.yaml:1:",
            "{{break}} outside {{range}}",
        ),
        ("{{ template \"nope\" }}", "", ""),
    ];
    for (text, loc, msg) in cases {
        match Template::parse("p.yaml", text) {
            Err(e) => {
                let s = e.to_string();
                assert!(s.starts_with(loc) && s.contains(msg), "{text:?}: {s}");
            }
            Ok(t) => {
                assert!(loc.is_empty(), "{text:?} parsed");
                let err = t.render(&json!({})).expect_err("undefined template");
                assert!(
                    err.to_string().contains("template \"nope\" not defined"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn exec_errors_are_go_like() {
    assert!(e("{{ fail \"boom\" }}", json!({})).ends_with("error calling fail: boom"));
    assert!(
        e("{{ upper 3 }}", json!({})).ends_with("wrong type for value; expected string; got int")
    );
    assert!(e("{{ .A.B }}", json!({"A": "s"})).ends_with("can't evaluate field B in type string"));
    assert!(
        e("{{ index .L 5 }}", json!({"L": [1]}))
            .ends_with("error calling index: index out of range: 5")
    );
    assert!(e("{{ range 1.5 }}{{ end }}", json!({})).contains("range can't iterate over 1.5"));
    assert!(e("{{ len 3 }}", json!({})).contains("len of type int"));
    assert!(
        e("{{ printf }}", json!({}))
            .contains("wrong number of args for printf: want at least 1 got 0")
    );
    // sprig's slice shadows the builtin, as in Go's Funcs(): strings are refused
    assert!(
        e("{{ slice \"hello\" 1 3 }}", json!({}))
            .ends_with("error calling slice: list should be type of slice or array but string")
    );
}

#[test]
fn set_mutates_shared_maps() {
    assert_eq!(
        r(
            "{{ $d := dict }}{{ $_ := set $d \"k\" \"v\" }}{{ $e := $d }}{{ $_ := set $e \"z\" 1 }}{{ $d }}",
            json!({})
        ),
        "map[k:v z:1]"
    );
}
