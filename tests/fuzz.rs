//! Fuzz targets on stable Rust (proptest) for the template engine and parameter
//! validation. Invariants: no panic, no abort (a stack overflow kills the test binary),
//! every execution ends within its render budget, output within the budget.
//!
//! The number of cases per target comes from `KUDO_FUZZ_CASES` (default 1000, about a
//! minute for the whole file in a debug build on 2 cores). A longer run:
//! `KUDO_FUZZ_CASES=200000 cargo test --release --test fuzz -- --nocapture`.
//! Each target prints how many inputs it executed and how many rendered or failed.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use kudo::api::{Parameter, ParameterType};
use kudo::package as params;
use kudo::template::{RenderBudget, Template, function_names};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("KUDO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    })
}

/// A smaller budget than the default, so a case that hits it ends quickly.
fn fuzz_budget() -> RenderBudget {
    RenderBudget {
        max_output_bytes: 1 << 20,
        max_string_bytes: 1 << 20,
        max_list_len: 100_000,
        max_time: Duration::from_secs(1),
        ..RenderBudget::default()
    }
}

static FUNCS: LazyLock<Vec<&'static str>> = LazyLock::new(function_names);

/// Outcome counts of one target (cells: the runner takes a `Fn`).
#[derive(Default)]
struct Counts {
    execs: Cell<u64>,
    parse_errors: Cell<u64>,
    render_errors: Cell<u64>,
    budget_errors: Cell<u64>,
    rendered: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl Counts {
    fn report(&self, target: &str) {
        eprintln!(
            "fuzz {target}: {} execs ({} rendered, {} parse errors, {} render errors, {} budget overruns)",
            self.execs.get(),
            self.rendered.get(),
            self.parse_errors.get(),
            self.render_errors.get(),
            self.budget_errors.get()
        );
    }
}

fn data() -> serde_json::Value {
    serde_json::json!({
        "Name": "inst",
        "Namespace": "ns",
        "Params": {
            "S": "héllo wörld",
            "N": "3",
            "L": [1.0, "two", [3.0], {"k": "v"}],
            "M": {"a": {"b": ["c", "d"]}, "e": null},
            "Empty": "",
        },
        "Pipes": {},
    })
}

/// Parses and executes one template; checks the invariants and counts the outcome.
fn exercise(text: &str, counts: &Counts) -> Result<(), TestCaseError> {
    bump(&counts.execs);
    let budget = fuzz_budget();
    let t = match Template::parse("fuzz.yaml", text) {
        Ok(t) => t,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            bump(&counts.parse_errors);
            return Ok(());
        }
    };
    match t.render_with(&data(), &budget) {
        Ok(out) => {
            prop_assert!(
                out.len() <= budget.max_output_bytes,
                "output of {} bytes past the budget",
                out.len()
            );
            bump(&counts.rendered);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.contains("fuzz.yaml"),
                "error without the template: {msg}"
            );
            if msg.contains("render budget") {
                bump(&counts.budget_errors);
            } else {
                bump(&counts.render_errors);
            }
        }
    }
    Ok(())
}

// ---- generators ----

fn literal() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (-5i64..70).prop_map(|i| i.to_string()),
        prop_oneof![
            Just("0"),
            Just("-1"),
            Just("1e308"),
            Just("-0.5"),
            Just("0x7fffffffffffffff"),
            Just("9223372036854775807"),
            Just("-9223372036854775808"),
            Just("1000000"),
            Just("'é'"),
            Just("1.5"),
        ]
        .prop_map(String::from),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop_oneof![
            Just(r#""""#),
            Just(r#""a""#),
            Just(r#""ééé日本""#),
            Just(r#""%d %s %v %q %x %99999d %.*d %-*s %#v %T %!""#),
            Just(r#""a,b,,c""#),
            Just(r#""\n\t x  y\n""#),
            Just(r#""2006-01-02T15:04:05Z""#),
            Just(r#""1h2m3s""#),
            Just(r#""1.2.3-beta+x""#),
            Just(r#"">= 1.0, < 2""#),
            Just(r#""(a+)+$""#),
            Just(r#""[""#),
            Just(r#""http://u:p@h:80/p?q=1#f""#),
            Just(r#""{\"a\": [1, 2]}""#),
            Just(r#""a: [1, 2]""#),
            Just(r#""SGVsbG8=""#),
            Just("`raw\\`"),
        ]
        .prop_map(String::from),
        "[a-zA-Zé0-9 _.,:;/-]{0,12}".prop_map(|s| format!("{s:?}")),
        prop_oneof![Just("true"), Just("false"), Just("nil")].prop_map(String::from),
        prop_oneof![
            Just("."),
            Just("$"),
            Just(".Params"),
            Just(".Params.S"),
            Just(".Params.L"),
            Just(".Params.M"),
            Just(".Params.M.a"),
            Just(".Params.Missing"),
            Just("$.Name"),
            Just("$x"),
            Just("$l"),
            Just("$d"),
        ]
        .prop_map(String::from),
    ]
    .boxed()
}

/// A pipeline: function calls from the real function table with random arguments,
/// parenthesised sub-pipelines and `|` chains.
fn pipeline() -> impl Strategy<Value = String> {
    let leaf = literal();
    leaf.prop_recursive(4, 24, 4, |inner| {
        let func = proptest::sample::select(FUNCS.clone());
        prop_oneof![
            (func.clone(), proptest::collection::vec(inner.clone(), 0..4))
                .prop_map(|(f, args)| format!("{f} {}", args.join(" "))),
            (func.clone(), proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("({f} {})", args.join(" "))),
            (
                inner.clone(),
                func,
                proptest::collection::vec(inner.clone(), 0..2)
            )
                .prop_map(|(p, f, args)| format!("{p} | {f} {}", args.join(" "))),
            inner.prop_map(|p| format!("({p})")),
        ]
    })
}

/// A template body: text, actions, variables, blocks, template calls.
fn body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z \n:-]{0,8}",
        pipeline().prop_map(|p| format!("{{{{{p}}}}}")),
        pipeline().prop_map(|p| format!("{{{{- {p} -}}}}")),
        pipeline().prop_map(|p| format!("{{{{$x = {p}}}}}")),
        pipeline().prop_map(|p| format!("{{{{$l = list $l {p}}}}}")),
        pipeline().prop_map(|p| format!("{{{{$_ := set $d \"k\" {p}}}}}")),
        prop_oneof![Just("a"), Just("b")].prop_map(|n| format!("{{{{template \"{n}\" .}}}}")),
        pipeline().prop_map(|p| format!("{{{{template \"a\" {p}}}}}")),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let list = proptest::collection::vec(inner, 0..4).prop_map(|v| v.concat());
        prop_oneof![
            (pipeline(), list.clone()).prop_map(|(p, b)| format!("{{{{if {p}}}}}{b}{{{{end}}}}")),
            (pipeline(), list.clone(), list.clone())
                .prop_map(|(p, b, e)| format!("{{{{if {p}}}}}{b}{{{{else}}}}{e}{{{{end}}}}")),
            (pipeline(), list.clone()).prop_map(|(p, b)| format!("{{{{with {p}}}}}{b}{{{{end}}}}")),
            (pipeline(), list.clone()).prop_map(|(p, b)| {
                format!(
                    "{{{{range $i, $e := {p}}}}}{b}{{{{if $i}}}}{{{{break}}}}{{{{end}}}}{{{{end}}}}"
                )
            }),
            (pipeline(), list.clone(), list.clone())
                .prop_map(|(p, b, e)| format!("{{{{range {p}}}}}{b}{{{{else}}}}{e}{{{{end}}}}")),
            list,
        ]
    })
}

/// A whole file: variables the body uses, two defines that may call each other.
fn template_file() -> impl Strategy<Value = String> {
    (body(), body(), body()).prop_map(|(main, a, b)| {
        format!(
            "{{{{$x := 1}}}}{{{{$l := list}}}}{{{{$d := dict}}}}{{{{define \"a\"}}}}{{{{$x := 1}}}}{{{{$l := list}}}}{{{{$d := dict}}}}{a}{{{{end}}}}{{{{define \"b\"}}}}{{{{$x := 1}}}}{{{{$l := list}}}}{{{{$d := dict}}}}{b}{{{{end}}}}{main}"
        )
    })
}

/// Fragments of template syntax in any order (mostly malformed: parser and lexer).
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop_oneof![
            Just("{{"),
            Just("}}"),
            Just("{{- "),
            Just(" -}}"),
            Just("{{/*"),
            Just("*/}}"),
            Just("if "),
            Just("else "),
            Just("else if "),
            Just("end"),
            Just("range "),
            Just("with "),
            Just("break"),
            Just("continue"),
            Just("define \"a\""),
            Just("template \"a\""),
            Just("block \"b\" ."),
            Just(" | "),
            Just("("),
            Just(")"),
            Just(":="),
            Just("="),
            Just(","),
            Just("$x"),
            Just("\""),
            Just("`"),
            Just("'"),
            Just("\n"),
            Just("é"),
        ]
        .prop_map(String::from),
        literal(),
        proptest::sample::select(FUNCS.clone()).prop_map(String::from),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|v| v.join(" "))
}

#[test]
fn fuzz_template_grammar() {
    let counts = Counts::default();
    let mut r = runner(cases());
    let result = r.run(&template_file(), |t| exercise(&t, &counts));
    counts.report("template grammar");
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn fuzz_template_token_soup() {
    let counts = Counts::default();
    let mut r = runner(cases());
    let result = r.run(&token_soup(), |t| exercise(&t, &counts));
    counts.report("template token soup");
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn fuzz_template_bytes() {
    let counts = Counts::default();
    let mut r = runner(cases());
    let strategy = prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "(\\{\\{|\\}\\}|[ -~]|é){0,80}",
    ];
    let result = r.run(&strategy, |t| exercise(&t, &counts));
    counts.report("template bytes");
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every function with every kind of argument, 0 to 3 of them, directly and piped.
#[test]
fn fuzz_template_functions() {
    let counts = Counts::default();
    let mut r = runner(cases() * 4);
    let strategy = (
        proptest::sample::select(FUNCS.clone()),
        proptest::collection::vec(literal(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(f, args, piped)| {
            let vars = "{{$x := 1}}{{$l := list 1 \"a\"}}{{$d := dict \"k\" 1}}";
            match (piped, args.split_last()) {
                (true, Some((last, rest))) => {
                    format!("{vars}{{{{{last} | {f} {}}}}}", rest.join(" "))
                }
                _ => format!("{vars}{{{{{f} {}}}}}", args.join(" ")),
            }
        });
    let result = r.run(&strategy, |t| exercise(&t, &counts));
    counts.report("template functions");
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---- parameters ----

fn param_type() -> impl Strategy<Value = ParameterType> {
    prop_oneof![
        Just(ParameterType::String),
        Just(ParameterType::Integer),
        Just(ParameterType::Number),
        Just(ParameterType::Boolean),
        Just(ParameterType::Array),
        Just(ParameterType::Map),
    ]
}

/// YAML-ish text: scalars, flow and block collections, anchors, tags, deep nesting.
fn yaml_text() -> BoxedStrategy<String> {
    let scalar = prop_oneof![
        Just(String::new()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        prop_oneof![
            Just("true"),
            Just("True"),
            Just("t"),
            Just("0"),
            Just("~"),
            Just("null"),
            Just(".inf"),
            Just("NaN"),
            Just("1e999"),
            Just("0x1F"),
            Just("0o17"),
            Just("1_000"),
            Just("+5"),
            Just("-"),
            Just("é"),
            Just("'quoted'"),
            Just("\"dq\\u00e9\""),
            Just("!!binary aGk="),
            Just("&a [1, *a]"),
            Just("*missing"),
            Just("? complex\n: key"),
            Just("|\n  literal\n"),
            Just(">-\n  folded\n"),
            Just("%YAML 1.2\n---\na: 1"),
            Just("a: 1\n---\nb: 2"),
            Just("{a: 1, a: 2}"),
            Just("a: &x {b: 1}\nc: *x\nd: {<<: *x}"),
        ]
        .prop_map(String::from),
        "[ -~é\n\t]{0,20}",
    ];
    scalar
        .prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                proptest::collection::vec(("[a-z]{1,3}", inner.clone()), 0..4).prop_map(|v| {
                    let items: Vec<String> = v.iter().map(|(k, x)| format!("{k}: {x}")).collect();
                    format!("{{{}}}", items.join(", "))
                }),
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| { v.iter().map(|x| format!("- {x}\n")).collect::<String>() }),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                    v.iter()
                        .map(|(k, x)| format!("{k}: {x}\n"))
                        .collect::<String>()
                }),
            ]
        })
        .boxed()
}

fn yaml_or_deep() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => yaml_text(),
        1 => (1usize..3000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..3000).prop_map(|n| format!("{}1{}", "{a: ".repeat(n), "}".repeat(n))),
        1 => (1usize..300).prop_map(|n| (0..n).map(|i| format!("{}- x\n", "  ".repeat(i))).collect()),
        1 => (1usize..12).prop_map(|n| {
            // alias amplification ("billion laughs")
            let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
            for i in 1..=n {
                let p = i - 1;
                s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
            }
            s
        }),
    ]
}

fn parameter() -> impl Strategy<Value = Parameter> {
    (
        "[a-zA-Z][a-zA-Z0-9_]{0,6}",
        param_type(),
        proptest::option::of(yaml_or_deep()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(proptest::collection::vec(yaml_text(), 0..3)),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(name, value_type, default, required, immutable, r#enum, sensitive)| Parameter {
                name,
                declared_type: Some(value_type),
                default,
                required,
                immutable,
                r#enum,
                sensitive,
                ..Parameter::default()
            },
        )
}

#[test]
fn fuzz_parameter_validation() {
    let mut r = runner(cases());
    let (execs, valid, invalid) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
    let strategy = (
        proptest::collection::vec(parameter(), 0..5),
        proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,6}", yaml_or_deep(), 0..5),
        proptest::option::of(proptest::collection::btree_map(
            "[a-zA-Z][a-zA-Z0-9_]{0,6}",
            yaml_text(),
            0..4,
        )),
    );
    let result = r.run(&strategy, |(declared, mut values, old)| {
        bump(&execs);
        // Give some declared parameters a value of their own.
        for (i, p) in declared.iter().enumerate() {
            if i % 2 == 0
                && let Some(v) = values.values().next().cloned()
            {
                values.insert(p.name.clone(), v);
            }
        }
        let resolved = match params::resolve_parameters(&declared, &values, old.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                prop_assert!(!e.0.is_empty());
                for err in &e.0 {
                    prop_assert!(!err.reason.is_empty());
                    // A sensitive value never appears in its error.
                    if let Some(p) = declared.iter().find(|p| p.name == err.parameter)
                        && p.sensitive == Some(true)
                        && let Some(v) = values.get(&p.name).filter(|v| v.len() > 3)
                    {
                        prop_assert!(!err.reason.contains(v.as_str()), "{}", err.reason);
                    }
                }
                bump(&invalid);
                // params_value must cope with values that failed validation too.
                let all: BTreeMap<String, Option<String>> = declared
                    .iter()
                    .map(|p| (p.name.clone(), values.get(&p.name).cloned()))
                    .collect();
                let _ = params::params_value(&declared, &all);
                return Ok(());
            }
        };
        bump(&valid);
        if let Ok(v) = params::params_value(&declared, &resolved) {
            let ctx = params::RenderContext::default();
            let data = params::context_value(&ctx, v);
            let t = Template::parse(
                "params.yaml",
                "{{range $k, $v := .Params}}{{$k}}: {{toYaml $v | nindent 2}}{{toJson $v}}{{$v}}\n{{end}}",
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = t.render_with(&data, &fuzz_budget());
        }
        Ok(())
    });
    eprintln!(
        "fuzz parameter validation: {} execs ({} valid, {} refused)",
        execs.get(),
        valid.get(),
        invalid.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One value of every type, checked one at a time (fast path for the scalar checks).
#[test]
fn fuzz_parameter_single_values() {
    let mut r = runner(cases() * 4);
    let execs = Cell::new(0u64);
    let result = r.run(
        &(param_type(), yaml_or_deep(), any::<bool>()),
        |(ty, v, sensitive)| {
            bump(&execs);
            let p = Parameter {
                name: "p".into(),
                declared_type: Some(ty),
                sensitive: Some(sensitive),
                ..Parameter::default()
            };
            let values = BTreeMap::from([("p".to_string(), v.clone())]);
            match params::resolve_parameters(std::slice::from_ref(&p), &values, None) {
                Ok(resolved) => {
                    let _ = params::params_value(std::slice::from_ref(&p), &resolved);
                }
                Err(e) => {
                    if sensitive && v.len() > 3 {
                        prop_assert!(!e.to_string().contains(&v), "{e}");
                    }
                }
            }
            Ok(())
        },
    );
    eprintln!("fuzz parameter single values: {} execs", execs.get());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every function with every combination of edge-case arguments (up to two; in longer
/// runs, `KUDO_FUZZ_CASES` above 1000, also a third from a smaller set): deterministic,
/// so CI covers each pair on every run.
#[test]
fn every_function_with_edge_arguments() {
    let args = [
        "0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "1000000",
        "1.5",
        "-1e308",
        r#""""#,
        r#""é日""#,
        r#""%*d%.*s%999999x""#,
        "true",
        "nil",
        "(list 1 \"é\" (list))",
        "(dict \"a\" (dict \"b\" 1))",
        "now",
        "$d",
    ];
    let thirds: &[&str] = if cases() > 1000 {
        &["2", r#""ééé""#, "(list)"]
    } else {
        &[]
    };
    let counts = Counts::default();
    let mut cases = Vec::new();
    for f in FUNCS.iter() {
        cases.push(f.to_string());
        for a in args {
            cases.push(format!("{f} {a}"));
            for b in args {
                cases.push(format!("{f} {a} {b}"));
                for c in thirds {
                    cases.push(format!("{f} {a} {b} {c}"));
                }
            }
        }
    }
    for call in &cases {
        let t = format!("{{{{$d := dict \"k\" (list 1)}}}}{{{{{call}}}}}");
        if let Err(e) = exercise(&t, &counts) {
            panic!("{t}: {e}");
        }
    }
    counts.report("every function with edge arguments");
}
