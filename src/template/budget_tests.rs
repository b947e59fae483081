//! Regression tests for the render budget (issue 18, defect 5) and for slicing that
//! panicked on multibyte text (defect 6). Each failed, hung or aborted before the budget.

use super::*;
use serde_json::json;

fn budget_err(t: &str) -> String {
    match render("x.yaml", t, &json!({})) {
        Ok(out) => panic!("{t}: expected a budget error, got {} bytes", out.len()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("render budget") && msg.contains("x.yaml"),
                "{t}: expected a budget error naming the template, got {msg}"
            );
            msg
        }
    }
}

fn ok(t: &str) -> String {
    render("x.yaml", t, &json!({})).unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[test]
fn self_recursive_template_is_a_depth_error_not_a_stack_overflow() {
    let msg = budget_err(r#"{{define "a"}}{{template "a"}}{{end}}{{template "a"}}"#);
    assert!(msg.contains("nesting"), "{msg}");
}

#[test]
fn mutual_recursion_with_control_structures_is_a_depth_error() {
    let msg = budget_err(
        r#"{{define "a"}}{{if true}}{{with 1}}{{range until 1}}{{template "b" .}}{{end}}{{end}}{{end}}{{end}}{{define "b"}}{{template "a" (list (list .))}}{{end}}{{template "a" 1}}"#,
    );
    assert!(msg.contains("nesting"), "{msg}");
}

#[test]
fn deeply_nested_parentheses_are_refused_not_overflowing() {
    let t = format!("{{{{{}1{}}}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(render("x.yaml", &t, &json!({})).is_err());
}

#[test]
fn deeply_nested_control_structures_are_refused_not_overflowing() {
    let t = format!(
        "{}x{}",
        "{{if 1}}".repeat(100_000),
        "{{end}}".repeat(100_000)
    );
    assert!(render("x.yaml", &t, &json!({})).is_err());
}

#[test]
fn huge_printf_width_is_go_noverb_not_an_allocation_abort() {
    // Go's fmt refuses widths above 1e6 and consumes the rest of the verb.
    assert_eq!(
        ok(r#"{{printf "%99999999999d" 1}}"#),
        "%!(NOVERB)%!(EXTRA int=1)"
    );
    assert_eq!(ok(r#"{{printf "%*d" 99999999999 1}}"#), "%!(BADWIDTH)1");
    assert_eq!(ok(r#"{{printf "%.*d" 99999999999 1}}"#), "%!(BADPREC)1");
}

#[test]
fn printf_widths_that_add_up_past_the_string_limit_are_refused() {
    let verbs = "%999999d".repeat(40);
    budget_err(&format!("{{{{printf \"{verbs}\" {}}}}}", "1 ".repeat(40)));
}

#[test]
fn printf_large_precision_is_linear() {
    assert_eq!(ok(r#"{{printf "%.999999d" 1 | len}}"#), "999999");
}

#[test]
fn repeat_past_the_string_limit_is_refused() {
    let msg = budget_err(r#"{{repeat 99999999999 "ab"}}"#);
    assert!(msg.contains("string"), "{msg}");
}

#[test]
fn indent_and_nindent_past_the_string_limit_are_refused() {
    budget_err(r#"{{indent 99999999999 "a"}}"#);
    budget_err(r#"{{nindent 99999999999 "a"}}"#);
    budget_err(r#"{{indent 1000000 (repeat 100 "\n")}}"#);
}

#[test]
fn until_past_the_list_limit_is_refused() {
    let msg = budget_err(r#"{{until 99999999999 | len}}"#);
    assert!(msg.contains("list"), "{msg}");
}

#[test]
fn until_step_that_overflows_ends() {
    // Go's loop wraps around and never ends; ours stops before the overflow.
    assert_eq!(
        ok(r#"{{untilStep 9223372036854775806 9223372036854775807 4611686018427387904}}"#),
        "[9223372036854775806]"
    );
    budget_err(r#"{{untilStep -9223372036854775807 9223372036854775807 1 | len}}"#);
    assert_eq!(
        ok(r#"{{seq 9223372036854775806 9223372036854775807}}"#),
        "9223372036854775806 9223372036854775807"
    );
}

#[test]
fn seq_past_the_list_limit_is_refused() {
    budget_err(r#"{{seq 99999999999 | len}}"#);
}

#[test]
fn output_past_the_limit_is_refused() {
    let msg = budget_err(r#"{{range until 100}}{{repeat 1000000 "x"}}{{end}}"#);
    assert!(msg.contains("output exceeds 16 MiB"), "{msg}");
}

#[test]
fn join_of_a_shared_big_string_is_refused() {
    budget_err(
        r#"{{$s := repeat 1000000 "x"}}{{$l := list}}{{range until 100}}{{$l = append $l $s}}{{end}}{{join "," $l | len}}"#,
    );
}

#[test]
fn printing_an_exponentially_shared_list_is_refused() {
    budget_err(r#"{{$l := list 1 2}}{{range until 64}}{{$l = list $l $l}}{{end}}{{$l}}"#);
    budget_err(
        r#"{{$l := list 1 2}}{{range until 64}}{{$l = list $l $l}}{{end}}{{toJson $l | len}}"#,
    );
    budget_err(
        r#"{{$l := list 1 2}}{{range until 64}}{{$l = list $l $l}}{{end}}{{toYaml $l | len}}"#,
    );
    budget_err(
        r#"{{$l := list 1 2}}{{range until 64}}{{$l = list $l $l}}{{end}}{{deepCopy $l | len}}"#,
    );
}

#[test]
fn deep_equal_of_shared_lists_is_polynomial() {
    assert_eq!(
        ok(
            r#"{{$a := list 1 2}}{{$b := list 1 2}}{{range until 64}}{{$a = list $a $a}}{{$b = list $b $b}}{{end}}{{deepEqual $a $b}}"#
        ),
        "true"
    );
}

#[test]
fn deeply_nested_values_are_refused_when_printed_and_dropped_without_overflow() {
    budget_err(r#"{{$l := list}}{{range until 200000}}{{$l = list $l}}{{end}}{{$l}}"#);
    // Building and dropping it (no traversal) must not overflow either.
    assert_eq!(
        ok(r#"{{$l := list}}{{range until 200000}}{{$l = list $l}}{{end}}{{len $l}}"#),
        "1"
    );
    let mut d = String::from(r#"{{$d := dict}}"#);
    d.push_str(r#"{{range until 200000}}{{$d = dict "a" $d}}{{end}}{{len $d}}"#);
    assert_eq!(ok(&d), "1");
}

#[test]
fn a_map_that_contains_itself_is_refused() {
    budget_err(r#"{{$d := dict}}{{$_ := set $d "self" $d}}{{$d}}"#);
}

#[test]
fn an_endless_range_is_stopped_by_the_time_budget() {
    let budget = RenderBudget {
        max_time: std::time::Duration::from_millis(200),
        ..RenderBudget::default()
    };
    let t = Template::parse("x.yaml", r#"{{range 9223372036854775807}}{{end}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = match t.render_with(&json!({}), &budget) {
        Ok(_) => panic!("expected a time budget error"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("x.yaml") && msg.contains("time"), "{msg}");
}

#[test]
fn quadratic_uniq_is_stopped_by_the_time_budget() {
    let budget = RenderBudget {
        max_time: std::time::Duration::from_millis(200),
        ..RenderBudget::default()
    };
    let t = Template::parse("x.yaml", r#"{{until 1000000 | uniq | len}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(t.render_with(&json!({}), &budget).is_err());
}

#[test]
fn splitting_into_too_many_parts_is_refused() {
    budget_err(r#"{{splitList "" (repeat 2000000 "x") | len}}"#);
    budget_err(r#"{{split "," (repeat 2000000 ",") | len}}"#);
    budget_err(r#"{{regexSplit "," (repeat 2000000 ",") -1 | len}}"#);
}

#[test]
fn replace_that_amplifies_past_the_string_limit_is_refused() {
    budget_err(r#"{{replace "" (repeat 100000 "y") (repeat 1000 "x") | len}}"#);
    budget_err(r#"{{regexReplaceAll "" (repeat 1000 "x") (repeat 100000 "y") | len}}"#);
    budget_err(r#"{{wrapWith 1 (repeat 100000 "y") (repeat 1000 "x ") | len}}"#);
}

#[test]
fn random_strings_past_the_string_limit_are_refused() {
    budget_err(r#"{{randAlphaNum 99999999999 | len}}"#);
    budget_err(r#"{{randBytes 99999999999 | len}}"#);
}

// Defect 6: byte cuts inside a character.

#[test]
fn abbrev_cuts_at_the_previous_character_boundary() {
    assert_eq!(ok(r#"{{abbrev 5 "ééééé"}}"#), "é...");
    assert_eq!(ok(r#"{{abbrev 4 "日本語テキスト"}}"#), "...");
}

#[test]
fn abbrevboth_cuts_at_character_boundaries() {
    assert_eq!(ok(r#"{{abbrevboth 5 10 "ééééééééééééé"}}"#), "...éé...");
    assert_eq!(ok(r#"{{abbrevboth 0 5 "ééééééé"}}"#), "é...");
}

#[test]
fn trunc_cuts_at_the_previous_character_boundary() {
    assert_eq!(ok(r#"{{trunc 3 "ééé"}}"#), "é");
    assert_eq!(ok(r#"{{trunc -3 "ééé"}}"#), "éé");
}

#[test]
fn substr_cuts_at_the_previous_character_boundary() {
    assert_eq!(ok(r#"{{substr 1 4 "ééé"}}"#), "éé");
    assert_eq!(ok(r#"{{substr -1 3 "ééé"}}"#), "é");
    assert_eq!(ok(r#"{{substr 3 -1 "ééé"}}"#), "éé");
}

#[test]
fn wrap_of_multibyte_text_does_not_panic() {
    assert!(render("x.yaml", r#"{{wrap 1 "é é éé"}}"#, &json!({})).is_ok());
    assert!(render("x.yaml", r#"{{wrapWith 1 "\n" "ééé"}}"#, &json!({})).is_ok());
}

/// Runs `f` on a thread with a 2 MiB stack (tokio's and the test harness's default, the
/// smallest a render runs on); an overflow aborts the test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap_or_else(|e| panic!("spawn: {e}"))
        .join()
        .unwrap_or_else(|_| panic!("render thread panicked"))
}

/// The most stack bytes one nesting level takes, measured with the executor's probe
/// (where a level continues on a new stack segment, the stack left goes up: skipped).
fn stack_per_level(t: &str) -> usize {
    let t = t.to_string();
    on_small_stack(move || {
        exec::STACK_PROBE.with(|p| p.borrow_mut().clear());
        let _ = render("x.yaml", &t, &json!({}));
        let sps = exec::STACK_PROBE.with(|p| p.borrow().clone());
        assert!(sps.len() > 10, "probe saw {} levels", sps.len());
        sps.windows(2)
            .filter_map(|w| w[0].checked_sub(w[1]))
            .max()
            .unwrap_or(0)
    })
}

#[test]
fn one_nesting_level_fits_the_stack_budget() {
    let max = RenderBudget::default().max_depth;
    let shapes = [
        r#"{{define "a"}}{{template "a" .}}{{end}}{{template "a" 1}}"#,
        r#"{{define "a"}}{{if true}}{{with 1}}{{range until 1}}{{template "a" (list (list .))}}{{end}}{{end}}{{end}}{{end}}{{template "a" 1}}"#,
        &format!(
            "{{{{define \"a\"}}}}{}{}{{{{end}}}}{{{{template \"a\"}}}}",
            "{{if 1}}".repeat(150),
            "{{end}}".repeat(150)
        ),
        &format!(
            "{{{{print {}1{}}}}}",
            "(print ".repeat(150),
            ")".repeat(150)
        ),
        &format!(
            "{{{{define \"a\"}}}}{{{{template \"a\" {}1{}}}}}{{{{end}}}}{{{{template \"a\"}}}}",
            "(list ".repeat(50),
            ")".repeat(50)
        ),
    ];
    let mut worst = 0;
    for t in shapes {
        let per = stack_per_level(t);
        eprintln!(
            "stack per nesting level: {per} bytes for {}",
            &t[..t.len().min(60)]
        );
        worst = worst.max(per);
    }
    // Each level starts with the red zone free; one level must take far less.
    assert!(
        worst * 8 < budget::RED_ZONE,
        "{worst} bytes per level leave too little of the {} byte red zone",
        budget::RED_ZONE
    );
    eprintln!(
        "worst {worst} bytes per level, {max} levels: {} KiB of stack",
        worst * max / 1024
    );
}

#[test]
fn recursion_to_the_limit_fits_a_small_thread_stack() {
    let msg = on_small_stack(|| {
        let t = r#"{{define "a"}}{{if true}}{{with 1}}{{range until 1}}{{template "a" (list (list .))}}{{end}}{{end}}{{end}}{{end}}{{template "a" 1}}"#;
        render("x.yaml", t, &json!({})).err().map(|e| e.to_string())
    });
    assert!(msg.is_some_and(|m| m.contains("render budget")));
    // The deepest value walks at the deepest template nesting.
    let out = on_small_stack(|| {
        let t = r#"{{define "a"}}{{if lt (len .) 490}}{{template "a" (append . 1)}}{{else}}{{$l := list}}{{range until 99}}{{$l = list $l}}{{end}}{{toYaml $l | len}} {{toJson $l | len}} {{printf "%v" $l | len}} {{deepCopy $l | deepEqual $l}}{{end}}{{end}}{{template "a" list}}"#;
        render("x.yaml", t, &json!({})).map_err(|e| e.to_string())
    });
    assert!(out.is_ok(), "{out:?}");
    // Parsing the deepest nesting allowed.
    let parsed = on_small_stack(|| {
        let t = format!(
            "{}{{{{print {}1{}}}}}{}",
            "{{if 1}}".repeat(500),
            "(print ".repeat(499),
            ")".repeat(499),
            "{{end}}".repeat(500)
        );
        render("x.yaml", &t, &json!({})).map_err(|e| e.to_string())
    });
    assert_eq!(parsed.as_deref(), Ok("1"));
}

#[test]
fn date_modify_past_the_time_range_is_an_error_not_a_panic() {
    let msg = match render(
        "x.yaml",
        r#"{{$t := now}}{{range until 1000}}{{$t = dateModify "2562047h" $t}}{{end}}{{$t}}"#,
        &json!({}),
    ) {
        Ok(out) => panic!("expected an error, got {out}"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("out of range"), "{msg}");
}
